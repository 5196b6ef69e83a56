"""Attachments: files stored once by their content (blobs), the uploads that name them for
an owner, and the messages that carry them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import Message, db, utcnow

NAME_MAX_CHARS = 255


class Blob(db.Model):
    """File bytes, stored once whoever uploads them: the key is their SHA-256."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column()
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Upload(db.Model):
    """One owner's file: its name, its sniffed type, and the blob that holds it.

    `text` is what the model reads of a text file or PDF (None for an image); `width` and
    `height` are an image's size in pixels.
    """

    __tablename__ = "uploads"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column()
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256", name="fk_uploads_blob"),
                                        index=True)
    text: Mapped[str | None] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column()
    height: Mapped[int | None] = mapped_column()
    # A large image's smaller copy that models are sent (None: the image itself).
    model_sha256: Mapped[str | None] = mapped_column(
        ForeignKey("blobs.sha256", name="fk_uploads_model_blob"))
    model_type: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    @property
    def is_image(self) -> bool:
        return self.type.startswith("image/")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "type": self.type, "size": self.size}


class MessageUpload(db.Model):
    """An upload attached to a message, in the order it was attached."""

    __tablename__ = "message_uploads"
    __table_args__ = (Index("ix_message_uploads_upload_id", "upload_id"),)

    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE", name="fk_message_uploads_message"),
        primary_key=True)
    upload_id: Mapped[int] = mapped_column(
        ForeignKey("uploads.id", ondelete="CASCADE", name="fk_message_uploads_upload"),
        primary_key=True)
    position: Mapped[int] = mapped_column(default=0)


def message_uploads(session: Session, message_ids: list[int]) -> dict[int, list[Upload]]:
    """The uploads of each of these messages, in their order (one query)."""
    if not message_ids:
        return {}
    rows = session.execute(
        select(MessageUpload.message_id, Upload).join(Upload, Upload.id == MessageUpload.upload_id)
        .where(MessageUpload.message_id.in_(message_ids))
        .order_by(MessageUpload.message_id, MessageUpload.position)).all()
    found: dict[int, list[Upload]] = {}
    for message_id, upload in rows:
        found.setdefault(message_id, []).append(upload)
    return found


def attachments_json(session: Session, message: Message) -> list[dict[str, Any]]:
    """A message's attachments as the contract shows them: `{id, name, type, size}`."""
    if message.role != "user" or message.id is None:
        return []
    return [u.to_json() for u in message_uploads(session, [message.id]).get(message.id, [])]


def store_blob(session: Session, data: bytes) -> str:
    """Keep these bytes (once, whoever sends them); their SHA-256. Flushed, not committed."""
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    if session.get(Blob, digest) is None:
        try:
            # A savepoint: the same bytes stored by another request meanwhile undo only this.
            with session.begin_nested():
                session.add(Blob(sha256=digest, size=len(data), data=data))
        except IntegrityError:
            pass
    return digest


def new_upload(session: Session, owner: str, file) -> Upload:
    """Store a read file (models.files.ReadFile) as `owner`'s upload; flushed."""
    digest = store_blob(session, file.data)
    model_digest = store_blob(session, file.model_data) if file.model_data else None
    upload = Upload(owner=owner, name=file.name, type=file.type, size=len(file.data),
                    sha256=digest, text=file.text, width=file.width, height=file.height,
                    model_sha256=model_digest, model_type=file.model_type)
    session.add(upload)
    session.flush()
    return upload


def blob_data(session: Session, sha256: str) -> bytes:
    return session.scalar(select(Blob.data).where(Blob.sha256 == sha256)) or b""


def remove_unused(session: Session, upload_ids: list[int]) -> None:
    """Delete these uploads when no message carries them any more, and then the blobs no
    upload names. Not committed."""
    if not upload_ids:
        return
    used = select(MessageUpload.upload_id).where(MessageUpload.upload_id.in_(upload_ids))
    unused = session.execute(select(Upload.sha256, Upload.model_sha256).where(
        Upload.id.in_(upload_ids), Upload.id.not_in(used))).all()
    gone = [digest for row in unused for digest in row if digest]
    session.execute(delete(Upload).where(Upload.id.in_(upload_ids), Upload.id.not_in(used))
                    .execution_options(synchronize_session=False))
    if gone:
        named = select(Upload.sha256).where(Upload.sha256.in_(gone))
        copies = select(Upload.model_sha256).where(Upload.model_sha256.in_(gone))
        session.execute(delete(Blob).where(Blob.sha256.in_(gone), Blob.sha256.not_in(named),
                                           Blob.sha256.not_in(copies))
                        .execution_options(synchronize_session=False))
