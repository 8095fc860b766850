"""Images for the embedded engine, through llama.cpp's multimodal library (mtmd).

A vision model is a GGUF plus its projector (`--mmproj`). An image becomes a run of prompt
positions holding embeddings instead of tokens, wrapped in the begin/end tokens the model was trained
with (mtmd knows them per projector). Preprocessing (resize, slicing) and encoding (the vision
tower) happen when the request is prepared, off the scheduler thread, unless the prefix cache already
holds the image; the scheduler decodes the embeddings when the sequence reaches the image (encoding it
then if the cache lost it in between).

Prompts (prompt.py) name positions by keys for the prefix cache: a text token by its id, position `i`
of an image by `(digest, i)`, the digest being a hash of the image's bytes and the resolution shown.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from pathlib import Path

import llama_cpp as ll
import numpy as np
from llama_cpp import mtmd_cpp as mtmd

from localxai.engines.llamacpp.model import LlamaModel, llama_log
from localxai.engines.llamacpp.prompt import ImageChunk, Unit
from localxai.errors import ConfigError, InternalError, InvalidArgument
from localxai.media.images import LoadedImage

MTMD_INPUT_CHUNK_TYPE_TEXT = 0
NO_CALLBACK = mtmd.mtmd_helper_post_decode_callback()  # a NULL function pointer


@functools.cache
def _route_mtmd_log() -> None:
    """mtmd's log goes to ours; once, when the first projector loads."""
    mtmd.mtmd_log_set(llama_log, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(llama_log, ctypes.c_void_p(0))


class Vision:
    """The projector of a vision model, bound to its text model."""

    def __init__(self, mmproj: Path, model: LlamaModel) -> None:
        _route_mtmd_log()
        params = mtmd.mtmd_context_params_default()
        params.n_threads = model.shape.threads
        params.print_timings = False
        self._ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), model.handle, params)
        if not self._ctx:
            raise ConfigError(f"llama.cpp could not load the projector {mmproj} for {model.path}")
        if not mtmd.mtmd_support_vision(self._ctx):
            mtmd.mtmd_free(self._ctx)
            raise ConfigError(f"{mmproj} is not a vision projector")
        self._model = model
        self._n_embd = ll.llama_model_n_embd_inp(model.handle)
        self._lock = threading.Lock()  # mtmd's preprocessing and encoding: one at a time

    def units(self, image: LoadedImage, index: int) -> list[Unit]:
        """The units of one image: the projector's begin tokens, the image, its end tokens."""
        width, height, pixels = image.pixels()
        data = (ctypes.c_uint8 * len(pixels)).from_buffer_copy(pixels)
        with self._lock:
            bitmap = mtmd.mtmd_bitmap_init(width, height, data)
            chunks = mtmd.mtmd_input_chunks_init()
            try:
                part = mtmd.mtmd_input_part(text=None, bitmap=bitmap)
                parts = (ctypes.POINTER(mtmd.mtmd_input_part) * 1)(ctypes.pointer(part))
                if mtmd.mtmd_tokenize_from_parts(self._ctx, chunks, parts, 1, False) != 0:
                    raise InvalidArgument(f"image {index}: this model's projector cannot process the image.")
                units: list[Unit] = []
                for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                    chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                    if mtmd.mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT:
                        n = ctypes.c_size_t()
                        tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                        units.extend(int(tokens[j]) for j in range(n.value))
                    else:  # one image can be several chunks (slices): only the first carries the price
                        first = not any(isinstance(u, ImageChunk) for u in units)
                        n_pos = mtmd.mtmd_input_chunk_get_n_pos(chunk)
                        price = image.tokens if first else 0
                        units.append(ImageChunk(f"{image.digest}#{i}", n_pos, price, mtmd.mtmd_input_chunk_copy(chunk)))
                return units
            finally:
                mtmd.mtmd_input_chunks_free(chunks)
                mtmd.mtmd_bitmap_free(bitmap)

    def encode(self, image: ImageChunk) -> None:
        """Run the vision tower on the image (scheduler thread: llama.cpp's OpenMP threads belong to
        the thread that computes, and a vision tower run from another thread slowed every later text
        step, by 50% with the default model)."""
        with self._lock:
            if mtmd.mtmd_encode_chunk(self._ctx, image.handle) != 0:
                raise InternalError("llama.cpp could not encode an image")
            n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(image.handle)
            output = mtmd.mtmd_get_output_embd(self._ctx)
            image.embeddings = np.ctypeslib.as_array(output, shape=(n_tokens * self._n_embd,)).copy()

    def decode(self, image: ImageChunk, position: int, seq_id: int) -> None:
        """Encode the image and decode its embeddings into `seq_id` at `position` (scheduler thread)."""
        if image.embeddings is None:
            self.encode(image)
        assert image.embeddings is not None
        embeddings = image.embeddings.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        end = ll.llama_pos(0)
        rc = mtmd.mtmd_helper_decode_image_chunk(
            self._ctx, self._model.ctx, image.handle, embeddings, position, seq_id, self._model.shape.n_batch,
            ctypes.byref(end), NO_CALLBACK, None,
        )  # fmt: skip
        image.release()  # neither the pixels nor the embeddings are needed again
        if rc != 0:
            raise InternalError(f"llama.cpp could not decode an image (code {rc})")

    def close(self) -> None:
        if self._ctx:
            mtmd.mtmd_free(self._ctx)
            self._ctx = None
