"""attachments: blobs stored once by content, owners' uploads, and the messages carrying them

Revision ID: 0007attachments
Revises: 0006claim

"""
from alembic import op
import sqlalchemy as sa


revision = '0007attachments'
down_revision = '0006claim'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'blobs',
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('sha256'),
    )
    op.create_table(
        'uploads',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('owner', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('type', sa.String(length=100), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('text', sa.Text(), nullable=True),
        sa.Column('width', sa.Integer(), nullable=True),
        sa.Column('height', sa.Integer(), nullable=True),
        sa.Column('model_sha256', sa.String(length=64), nullable=True),
        sa.Column('model_type', sa.String(length=100), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['sha256'], ['blobs.sha256'], name='fk_uploads_blob'),
        sa.ForeignKeyConstraint(['model_sha256'], ['blobs.sha256'],
                                name='fk_uploads_model_blob'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_uploads_owner', 'uploads', ['owner'])
    op.create_index('ix_uploads_sha256', 'uploads', ['sha256'])
    op.create_table(
        'message_uploads',
        sa.Column('message_id', sa.Integer(), nullable=False),
        sa.Column('upload_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ondelete='CASCADE',
                                name='fk_message_uploads_message'),
        sa.ForeignKeyConstraint(['upload_id'], ['uploads.id'], ondelete='CASCADE',
                                name='fk_message_uploads_upload'),
        sa.PrimaryKeyConstraint('message_id', 'upload_id'),
    )
    op.create_index('ix_message_uploads_upload_id', 'message_uploads', ['upload_id'])


def downgrade():
    op.drop_index('ix_message_uploads_upload_id', table_name='message_uploads')
    op.drop_table('message_uploads')
    op.drop_index('ix_uploads_sha256', table_name='uploads')
    op.drop_index('ix_uploads_owner', table_name='uploads')
    op.drop_table('uploads')
    op.drop_table('blobs')
