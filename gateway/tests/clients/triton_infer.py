"""tritonclient's HTTP client (KServe v2) against a replica: readiness,
metadata, and one infer with binary tensors both ways. Prints JSON.

    triton_infer.py HOST:PORT MODEL TEXT...
"""

import json
import sys

import numpy as np
import tritonclient.http as http

url, model, texts = sys.argv[1], sys.argv[2], sys.argv[3:]
client = http.InferenceServerClient(url=url)
text = http.InferInput("text", [len(texts)], "BYTES")
text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
result = client.infer(model, [text], outputs=[http.InferRequestedOutput("embedding")])
embedding = result.as_numpy("embedding")
print(
    json.dumps(
        {
            "ready": client.is_server_ready() and client.is_model_ready(model),
            "metadata": client.get_model_metadata(model),
            "shape": list(embedding.shape),
            "embedding": embedding.astype(float).tolist(),
        }
    )
)
