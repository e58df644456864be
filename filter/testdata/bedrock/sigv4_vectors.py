"""Regenerates the SigV4 vectors the Rust tests in sigv4.rs embed, with botocore.

Run: /tmp/setup/venv/bin/python sigv4_vectors.py   (writes sigv4_*.txt next to it)
"""
import datetime
import hashlib
import os
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

HERE = os.path.dirname(os.path.abspath(__file__))
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
WHEN = datetime.datetime(2015, 8, 30, 12, 36, 0, tzinfo=datetime.timezone.utc)


def sign(name, method, url, headers, body, region, service="bedrock", token=None, sha_header=False):
    req = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    if sha_header:
        req.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        SigV4Auth(Credentials(AKID, SECRET, token), service, region).add_auth(req)
    auth = req.headers["Authorization"]
    if name:
        with open(os.path.join(HERE, f"sigv4_{name}.txt"), "w") as f:
            f.write(auth + "\n")
    print(name, req.headers["X-Amz-Date"], auth)


sign(None, "GET", "https://example.amazonaws.com/", {"Host": "example.amazonaws.com"}, b"",
     "us-east-1", service="service")
sign("converse", "POST",
     "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
     {"host": "bedrock-runtime.us-east-1.amazonaws.com", "content-type": "application/json",
      "user-agent": "ignored/1.0"},
     b'{"messages":[{"role":"user","content":[{"text":"Hello"}]}]}', "us-east-1")
sign("stream_token", "POST",
     "https://bedrock-runtime.us-west-2.amazonaws.com/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
     {"Host": "bedrock-runtime.us-west-2.amazonaws.com", "Content-Type": "application/json",
      "X-Custom": "  a   b  "},
     b'{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":16}}',
     "us-west-2", token="session/token+value==", sha_header=True)
sign("get_query", "GET",
     "https://bedrock.eu-central-1.amazonaws.com/foundation-models?byProvider=anthropic&byOutputModality=TEXT",
     {"host": "bedrock.eu-central-1.amazonaws.com"}, b"", "eu-central-1")
