"""The nanollm.v1 contracts: Python code generated from proto/nanollm/v1 by `make proto`.

Change the .proto files and run `make proto`; never edit the `*_pb2*` modules by hand.

    from nanollm.v1 import generate_pb2, generate_pb2_grpc
    stub = generate_pb2_grpc.GenerateServiceStub(grpc.insecure_channel("127.0.0.1:50051"))
"""
