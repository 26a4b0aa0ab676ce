"""Model folders load into fresh, aligned parameters: a tensor as the safetensors reader returns it may sit at any
byte offset of the file's buffer (in an fp32 file, every one did), and unaligned weights take other matmul paths,
which round differently (a student equal to its teacher then sampled other pixels)."""

from itertools import chain

import torch

from hyperbagel.model.checkpoint import MODEL_FILE, load_pretrained, read_tensors


def test_a_loaded_fp32_folder_is_its_file_in_aligned_parameters(micro_folder):
    stored = read_tensors(micro_folder / MODEL_FILE)
    assert {t.dtype for t in stored.values()} == {torch.float32}
    model, vae = load_pretrained(micro_folder)
    assert all(p.data_ptr() % 64 == 0 for p in chain(model.parameters(), vae.parameters()))
    for name, p in model.state_dict().items():
        assert torch.equal(p, stored[name]), name
