"""replies count the generations that claimed them

Revision ID: 0006claim
Revises: 0005organise

"""
from alembic import op
import sqlalchemy as sa


revision = '0006claim'
down_revision = '0005organise'
branch_labels = None
depends_on = None


# Plain ADD / DROP COLUMN: a batch copy of `messages` on SQLite would cascade-delete the
# deltas and versions that reference it.
def upgrade():
    op.add_column('messages', sa.Column('claim', sa.Integer(), nullable=False,
                                        server_default='0'))


def downgrade():
    op.drop_column('messages', 'claim')
