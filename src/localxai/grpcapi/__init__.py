"""The gRPC adapter for the official xai-sdk, with the stubs it ships: `xai_sdk.proto`, which holds the
gencode that matches the installed protobuf (v5 for protobuf 5, v6 for 6 and 7), so the server's messages
are the SDK's own classes and no version warning is raised (tests/test_protobuf_versions.py)."""
