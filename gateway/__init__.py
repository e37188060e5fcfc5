"""The REST gateway: OpenAI-compatible endpoints and the web UI's API, translated to the gRPC
contract (nanollm.v1) of a nanoLLM server. It depends on the contract and nanollm.client only,
never on the server's or trainer's code, and holds no model."""
