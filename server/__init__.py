"""The nanoLLM gRPC server: GenerateService and ModelAdminService on the step-level engine.

    gpt-server                                  # the shipped demo model on 127.0.0.1:50051
    gpt-server --checkpoint out/ckpt --grpc-port 50051 --max-batch-size 16

One engine thread per loaded model owns the model, its KV cache and its batch (server/engine.py);
the asyncio servicers only convert protobuf messages and wait for events. See docs/server.md.
"""
