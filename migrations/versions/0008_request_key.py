"""a prompt keeps the Idempotency-Key it was sent with: a repeated request finds it

Revision ID: 0008requestkey
Revises: 0007attachments

"""
from alembic import op
import sqlalchemy as sa


revision = '0008requestkey'
down_revision = '0007attachments'
branch_labels = None
depends_on = None


# Plain ADD COLUMN and CREATE INDEX: a batch copy of `messages` on SQLite would
# cascade-delete the deltas and versions that reference it.
def upgrade():
    op.add_column('messages', sa.Column('request_key', sa.String(length=64), nullable=True))
    op.create_index('uq_messages_thread_request_key', 'messages',
                    ['thread_id', 'request_key'], unique=True)


def downgrade():
    op.drop_index('uq_messages_thread_request_key', table_name='messages')
    op.drop_column('messages', 'request_key')
