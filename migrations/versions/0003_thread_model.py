"""each thread remembers the model chosen for its replies

Revision ID: 0003m
Revises: 0002

"""
from alembic import op
import sqlalchemy as sa


revision = '0003m'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('threads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('model', sa.String(length=200), nullable=True))


def downgrade():
    with op.batch_alter_table('threads', schema=None) as batch_op:
        batch_op.drop_column('model')
