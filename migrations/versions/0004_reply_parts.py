"""a reply's reasoning and tool steps, written as they stream

Revision ID: 0004p
Revises: 0004u

"""
from alembic import op
import sqlalchemy as sa


revision = '0004p'
down_revision = '0004u'
branch_labels = None
depends_on = None


# Plain ADD / DROP COLUMN (no batch copy): nullable columns need no table rewrite.
def upgrade():
    op.add_column('messages', sa.Column('reasoning', sa.Text(), nullable=True))
    op.add_column('messages', sa.Column('steps', sa.JSON(), nullable=True))
    op.add_column('messages', sa.Column('reasoning_ms', sa.Integer(), nullable=True))


def downgrade():
    op.drop_column('messages', 'reasoning_ms')
    op.drop_column('messages', 'steps')
    op.drop_column('messages', 'reasoning')
