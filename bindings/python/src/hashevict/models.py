"""Loading the project's GGUF models into transformers, offline.

``load_gguf(path)`` returns ``(model, tokenizer)`` for the llama
(SmolLM2-135M-Instruct) and gemma3 (Gemma 3 270M) GGUF files the llama.cpp
path uses, through transformers' own GGUF loader (``gguf_file=``; the
weights are dequantised to float32). Nothing is downloaded: set
``HF_HUB_OFFLINE=1``.

Gemma 3: transformers 5.2's GGUF tokenizer conversion reads the GGUF's merge
scores as unigram probabilities and builds a tokenizer that splits words
into near single characters and adds no ``<bos>``; the model then produces
garbage without any error. :func:`gemma_tokenizer` rebuilds a BPE tokenizer
from the GGUF vocabulary instead (every vocabulary piece, merges derived
from the pieces, ``<bos>`` prepended).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["load_gguf", "gemma_tokenizer", "gguf_architecture"]


def gguf_architecture(path) -> str:
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    f = r.fields["general.architecture"]
    return bytes(f.parts[f.data[0]]).decode()


def load_gguf(path, dtype=None):
    """(model, tokenizer) of a GGUF file, in eval mode, on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = Path(path)
    arch = gguf_architecture(p)
    model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name,
                                                 dtype=dtype or torch.float32).eval()
    if arch == "gemma3":
        tok = gemma_tokenizer(p)
    else:
        tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    return model, tok


def gemma_tokenizer(path):
    """A ``PreTrainedTokenizerFast`` for a Gemma 3 GGUF, rebuilt from its
    vocabulary (see the module docstring for why)."""
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    r = GGUFReader(str(path))

    def strings(name):
        f = r.fields[name]
        return [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]

    def scalar(name):
        f = r.fields[name]
        return int(f.parts[f.data[0]][0])

    tokens = strings("tokenizer.ggml.tokens")
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    vocab = {t: i for i, t in enumerate(tokens)}
    # The GGUF stores pieces and their SentencePiece scores, not merges. As
    # transformers' SentencePiece converter does, every split c = a + b of a
    # normal piece into two pieces is a merge, ranked by c's score (higher
    # first), then by the ids of a and b.
    f = r.fields["tokenizer.ggml.scores"]
    scores = [float(f.parts[i][0]) for i in f.data]
    merges = []
    for i, t in enumerate(tokens):
        if types[i] != 1 or len(t) < 2:
            continue
        for cut in range(1, len(t)):
            a, b = t[:cut], t[cut:]
            ia, ib = vocab.get(a), vocab.get(b)
            if ia is not None and ib is not None:
                merges.append((-scores[i], i, ia, ib, a, b))
    merges.sort()
    bpe = models.BPE(vocab=vocab, merges=[(m[4], m[5]) for m in merges], unk_token="<unk>", fuse_unk=True,
                     byte_fallback=True)
    tk = Tokenizer(bpe)
    tk.normalizer = normalizers.Replace(" ", "\u2581")
    tk.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    bos = tokens[scalar("tokenizer.ggml.bos_token_id")]
    eos = tokens[scalar("tokenizer.ggml.eos_token_id")]
    tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                      special_tokens=[(bos, vocab[bos])])
    special = [t for i, t in enumerate(tokens) if types[i] == 3]
    tk.add_special_tokens(special)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos, unk_token="<unk>",
                                   pad_token="<pad>" if "<pad>" in vocab else None)
