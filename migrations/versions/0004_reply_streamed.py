"""replies remember whether the model streamed them

Revision ID: 0004u
Revises: 0003s

"""
from alembic import op
import sqlalchemy as sa


revision = '0004u'
down_revision = '0003s'
branch_labels = None
depends_on = None


# Plain ADD / DROP COLUMN: a batch copy of `messages` on SQLite would cascade-delete the
# deltas and versions that reference it.
def upgrade():
    op.add_column('messages', sa.Column('streamed', sa.Boolean(), nullable=False,
                                        server_default=sa.true()))


def downgrade():
    op.drop_column('messages', 'streamed')
