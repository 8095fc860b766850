"""The gRPC adapter for the official xai-sdk, with the stubs it ships (`xai_sdk.proto.v5`)."""
