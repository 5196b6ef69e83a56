"""threads can be filed in folders, pinned, archived or temporary

Revision ID: 0005organise
Revises: 0004p

"""
from alembic import op
import sqlalchemy as sa


revision = '0005organise'
down_revision = '0005_accounts'
branch_labels = None
depends_on = None


# Plain ADD / DROP COLUMN: a batch copy of `threads` on SQLite would cascade-delete its
# messages.
def upgrade():
    op.create_table(
        'folders',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('owner', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('owner', 'name', name='uq_folders_owner_name'),
    )
    op.add_column('threads', sa.Column('folder', sa.String(length=100), nullable=True))
    for name in ('pinned', 'archived', 'temporary'):
        op.add_column('threads', sa.Column(name, sa.Boolean(), nullable=False,
                                           server_default=sa.false()))


def downgrade():
    for name in ('temporary', 'archived', 'pinned', 'folder'):
        op.drop_column('threads', name)
    op.drop_table('folders')
