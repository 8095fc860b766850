"""The embedded engine: llama.cpp in-process through llama-cpp-python's C API."""
