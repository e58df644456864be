"""Images and audio through the gateway with the official `openai` SDK: generations,
edits (a form upload), speech (audio bytes back), transcriptions and translations
(form uploads), as the client sent them to OpenAI and to Azure's deployment paths,
routed by the form's or body's model, metered where the answer reports usage; a 422
before any provider for backends that do not serve them."""

from __future__ import annotations

import base64
import hashlib
import uuid

import openai
import pytest

from conftest import API_KEYS, OVERRIDE_MODEL, checked, metadata_number, rid_headers

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
# A few KiB of bytes that stand for audio (the gateway never looks into them); one of
# them is a CR LF and a dash run, as a boundary-like line inside a file would be.
WAV = b"RIFF" + bytes(range(256)) * 16 + b"\r\n--not-the-boundary\r\n" + bytes(64)






def test_image_generation_is_metered(gateway, openai_client):
    rid, h = rid_headers()
    resp = openai_client.images.generate(model="gpt-image-1", prompt="a red fox in snow", extra_headers=h)
    up = checked(gateway, rid)
    assert (up["listener"], up["path"]) == ("primary", "/v1/images/generations")
    assert base64.b64decode(resp.data[0].b64_json) == PNG
    sent = up["response"]["usage"]
    assert resp.usage.input_tokens == sent["input_tokens"]
    entry = gateway.log_entry(rid)
    assert metadata_number(entry, "llm_input_token") == sent["input_tokens"]
    assert metadata_number(entry, "llm_output_token") == sent["output_tokens"]


def test_image_edit_upload_reaches_the_provider_whole(gateway, openai_client):
    rid, h = rid_headers()
    resp = openai_client.images.edit(model="gpt-image-1", image=("in.png", PNG, "image/png"),
                                     prompt="add a hat", extra_headers=h)
    up = checked(gateway, rid)
    assert up["path"] == "/v1/images/edits"
    assert up["form"]["model"] == "gpt-image-1" and up["form"]["prompt"] == "add a hat"
    assert up["form"]["_files"]["image"] == {"filename": "in.png", "bytes": len(PNG)}
    assert resp.data[0].b64_json
    assert metadata_number(gateway.log_entry(rid), "llm_input_token") == up["response"]["usage"]["input_tokens"]


def test_speech_returns_the_audio_bytes(gateway, openai_client):
    rid, h = rid_headers()
    resp = openai_client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="Hello there",
                                             extra_headers=h)
    up = checked(gateway, rid)
    assert up["path"] == "/v1/audio/speech"
    assert hashlib.sha256(resp.content).hexdigest() == up["sent_audio_sha256"]
    assert metadata_number(gateway.log_entry(rid), "llm_input_token") is None


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "whisper-1"])
def test_transcription_upload(gateway, openai_client, model):
    rid, h = rid_headers()
    resp = openai_client.audio.transcriptions.create(model=model, file=("talk.wav", WAV, "audio/wav"),
                                                     extra_headers=h)
    up = checked(gateway, rid)
    assert (up["listener"], up["path"]) == ("primary", "/v1/audio/transcriptions")
    assert up["form"]["model"] == model
    assert up["form"]["_files"]["file"] == {"filename": "talk.wav", "bytes": len(WAV)}
    assert resp.text == up["sent_text"]
    usage = up["response"]["usage"]
    entry = gateway.log_entry(rid)
    if usage is None:  # whisper-1 reports none
        assert metadata_number(entry, "llm_input_token") is None
    else:
        assert metadata_number(entry, "llm_input_token") == usage["input_tokens"]
        assert metadata_number(entry, "llm_output_token") == usage["output_tokens"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks translations deprecated
def test_translation_upload(gateway, openai_client):
    rid, h = rid_headers()
    resp = openai_client.audio.translations.create(model="whisper-1", file=("talk.wav", WAV, "audio/wav"),
                                                   extra_headers=h)
    up = checked(gateway, rid)
    assert up["path"] == "/v1/audio/translations"
    assert resp.text == up["sent_text"]


def test_upload_to_azure_takes_the_deployment_path(gateway, openai_client):
    rid, h = rid_headers()
    resp = openai_client.audio.transcriptions.create(model="azure-gpt-4o", file=("talk.wav", WAV, "audio/wav"),
                                                     extra_headers=h)
    up = checked(gateway, rid)
    assert up["path"] == "/openai/deployments/azure-gpt-4o/audio/transcriptions?api-version=2024-10-21"
    headers = {k.lower(): v for k, v in up["headers"]}
    assert headers["api-key"] == API_KEYS["azure"]
    assert resp.text == up["sent_text"]


def test_model_name_override_rewrites_the_form_field(gateway, openai_client):
    rid, h = rid_headers()
    openai_client.audio.transcriptions.create(model="mini-alias", file=("talk.wav", WAV, "audio/wav"),
                                              extra_headers=h)
    up = checked(gateway, rid)
    assert up["listener"] == "pinned"
    assert up["form"]["model"] == OVERRIDE_MODEL
    assert up["form"]["_files"]["file"]["bytes"] == len(WAV)


def test_media_to_other_schemas_are_refused_before_the_provider(gateway, openai_client):
    rid, h = rid_headers()
    with pytest.raises(openai.UnprocessableEntityError) as e:
        openai_client.audio.transcriptions.create(model="claude-3-5-sonnet", file=("t.wav", WAV, "audio/wav"),
                                                  extra_headers=h)
    assert e.value.code == "unsupported_by_provider"
    assert "/v1/audio/transcriptions" in e.value.message
    assert gateway.upstream(rid) == []


def test_a_form_without_a_model_is_a_400(gateway):
    rid = str(uuid.uuid4())
    r = gateway.session.post(gateway.url + "/v1/audio/transcriptions", files={"file": ("t.wav", WAV)},
                             headers={"x-request-id": rid}, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "model"
    assert gateway.upstream(rid) == []
