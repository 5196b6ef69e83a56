"""each thread remembers the model chosen for its replies

Revision ID: 0003m
Revises: 0003

"""
from alembic import op
import sqlalchemy as sa


revision = '0003m'
down_revision = '0003'
branch_labels = None
depends_on = None


# Plain ADD / DROP COLUMN: a batch copy of `threads` on SQLite would cascade-delete every
# message of every thread.
def upgrade():
    op.add_column('threads', sa.Column('model', sa.String(length=200), nullable=True))


def downgrade():
    op.drop_column('threads', 'model')
