"""The official `openai` client against a gateway URL: embeddings for a
string and for a list, in the client's default encoding (base64) and in
floats, then a bad request. Prints one JSON document for the Rust test.

    openai_embeddings.py BASE_URL API_KEY MODEL
"""

import json
import sys

import openai

base_url, api_key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

single = client.embeddings.create(model=model, input="a canary rollout shifts traffic")
listed = client.embeddings.create(
    model=model, input=["first sentence", "héllo wörld"], encoding_format="float"
)
try:
    client.embeddings.create(model=model, input=[])
    bad = None
except openai.BadRequestError as e:
    bad = {"status": e.status_code, "body": e.body, "type": e.type, "param": e.param}

print(
    json.dumps(
        {
            "single": [d.embedding for d in single.data],
            "single_usage": single.usage.prompt_tokens,
            "list": [d.embedding for d in listed.data],
            "list_index": [d.index for d in listed.data],
            "model": listed.model,
            "bad": bad,
        }
    )
)
