"""Textual-inversion embeddings: every file layout, built here; hostile files; the library's naming rules;
the prompt's vectors against diffusers' load_textual_inversion on the same tiny CLIP."""

import copy
import hashlib
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from sdstudio.engine.clip_text import CLIPTextModel, CLIPTextModelWithProjection
from sdstudio.engine.conditioning import PromptEncoder
from sdstudio.engine.embedding_files import index_embeddings, vector_count
from sdstudio.engine.embeddings import EmbeddingLibrary, read_embedding
from sdstudio.engine.errors import NetworkFileError
from sdstudio.engine.text_encoder import TextEncoder, _config
from sdstudio.engine.tokenizer import EOS, OPENCLIP_PAD
from tests.engine.transformers_reference import new_reference_tokenizer, reference_copy


def textured(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 0.3 + torch.linspace(-0.5, 0.5, shape[-1])


def save_a1111_pt(path, vectors, requires_grad=True):
    param = vectors.clone().requires_grad_(requires_grad)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": param}, "name": path.stem,
                "step": 1500, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "model"}, path)
    return path


def tiny_clip(width=32, seed=0, projection=False):
    torch.manual_seed(seed)
    config = _config(hidden=width, layers=2, heads=2, intermediate=2 * width, act="quick_gelu", proj=width)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()
    text = model.text_model if projection else model
    with torch.no_grad():  # a trained final norm has a bias, so the output mean is not ~0
        text.final_layer_norm.bias.normal_(0.0, 0.5)
    return model


# --- file layouts ---

def test_a1111_pt_reads_string_to_param_with_a1111_hash(tmp_path):
    vectors = textured(3, 768)
    path = save_a1111_pt(tmp_path / "BadHands.pt", vectors)
    emb = read_embedding(path)
    assert emb.name == "BadHands" and emb.count == 3 and emb.widths == (768,)
    assert torch.equal(emb.vectors[0], vectors) and emb.vectors[0].dtype == torch.float32
    assert not emb.vectors[0].requires_grad
    assert emb.short_hash == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert vector_count(path) == 3  # torch-free header read agrees


def test_diffusers_bin_single_token_is_one_vector(tmp_path):
    path = tmp_path / "learned_embeds.bin"
    vector = textured(768, seed=1)
    torch.save({"<cat-toy>": vector}, path)
    emb = read_embedding(path)
    assert emb.count == 1 and torch.equal(emb.vectors[0][0], vector)
    assert vector_count(path) == 1


@pytest.mark.parametrize("key, shape, count", [("emb_params", (5, 1024), 5), ("anything", (768,), 1),
                                               ("emb_params", (2, 768), 2)])
def test_single_tensor_safetensors_kohya_emb_params(tmp_path, key, shape, count):
    path = tmp_path / "kohya.safetensors"
    tensor = textured(*shape, seed=2).half()
    save_file({key: tensor}, path)
    emb = read_embedding(path)
    assert emb.count == count and emb.widths == (shape[-1],)
    assert torch.equal(emb.vectors[0], tensor.float().reshape(count, -1))
    assert vector_count(path) == count


def test_single_tensor_pt_file(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(textured(4, 768, seed=3), path)
    assert read_embedding(path).count == 4
    assert vector_count(path) == 4


def test_sdxl_file_gives_clip_l_then_clip_g(tmp_path):
    path = tmp_path / "xl.safetensors"
    clip_l, clip_g = textured(2, 768, seed=4), textured(2, 1280, seed=5)
    save_file({"clip_g": clip_g, "clip_l": clip_l}, path)
    emb = read_embedding(path)
    assert emb.widths == (768, 1280)
    assert torch.equal(emb.vectors[0], clip_l) and torch.equal(emb.vectors[1], clip_g)
    assert vector_count(path) == 2


# --- hostile files ---

class Payload:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(MARKER),))


MARKER = "/tmp/sdstudio-embedding-pickle-ran"


def one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message and len(message) < 400
    return message


def test_pickle_that_needs_more_than_tensors_is_refused_unexecuted(tmp_path):
    import pathlib
    pathlib.Path(MARKER).unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}, "x": Payload()}, path)
    with pytest.raises(NetworkFileError) as exc:
        read_embedding(path)
    assert "evil.pt" in one_line(exc) and "weights-only" in str(exc.value)
    assert vector_count(path) is None  # the torch-free reader refuses it too
    assert not pathlib.Path(MARKER).exists()


def test_legacy_raw_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "raw.bin"
    path.write_bytes(pickle.dumps({"tok": Payload()}, protocol=2))
    with pytest.raises(NetworkFileError):
        read_embedding(path)
    assert vector_count(path) is None


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_files_are_refused_in_one_line(tmp_path, suffix):
    good = tmp_path / f"good{suffix}"
    if suffix == ".pt":
        save_a1111_pt(good, textured(8, 768))
    else:
        save_file({"emb_params": textured(8, 768)}, good)
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    with pytest.raises(NetworkFileError) as exc:
        read_embedding(bad)
    assert f"bad{suffix}" in one_line(exc)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_vectors_are_refused(tmp_path, value):
    vectors = textured(3, 768)
    vectors[1, 7] = value
    path = tmp_path / "nan.safetensors"
    save_file({"emb_params": vectors}, path)
    with pytest.raises(NetworkFileError, match="NaN or infinite"):
        read_embedding(path)


@pytest.mark.parametrize("data, match", [
    ({"a": torch.zeros(1, 768), "b": torch.zeros(1, 768)}, "holds 2 entries"),
    ({"emb_params": torch.zeros(2, 3, 768)}, "shape"),
    ({"emb_params": torch.zeros(76, 768)}, "76 vectors"),
    ({"emb_params": torch.zeros(2, 768, dtype=torch.int32)}, "floating-point"),
    ({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(3, 1280)}, "different numbers"),
])
def test_malformed_layouts_are_refused(tmp_path, data, match):
    path = tmp_path / "odd.safetensors"
    save_file(data, path)
    with pytest.raises(NetworkFileError, match=match):
        read_embedding(path)


def test_wrong_width_names_both(tmp_path):
    save_a1111_pt(tmp_path / "sd1.pt", textured(2, 768))
    library = EmbeddingLibrary([tmp_path])
    assert library.lookup((768, 1280), {})("sd1", False) is None  # a plain word stays a word (A1111)
    with pytest.raises(NetworkFileError) as exc:
        library.lookup((768, 1280), {})("sd1", True)
    message = one_line(exc)
    assert "768 (SD 1.x)" in message and "768 + 1280 (SDXL)" in message
    xl = tmp_path / "xl.safetensors"
    save_file({"clip_l": textured(1, 768), "clip_g": textured(1, 1280)}, xl)
    library.refresh()
    with pytest.raises(NetworkFileError, match=r"768 \+ 1280 \(SDXL\).*1024 \(SD 2.x\)"):
        library.lookup((1024,), {})("xl", True)


# --- the library ---

def test_library_names_and_naming_rules(tmp_path, home):
    own = home / "embeddings"
    (own / "sub").mkdir(parents=True)
    extra = tmp_path / "a1111"
    extra.mkdir()
    save_file({"emb_params": textured(1, 768)}, own / "EasyNegative.safetensors")
    save_a1111_pt(own / "sub" / "deep.pt", textured(2, 768))
    save_a1111_pt(extra / "other.pt", textured(4, 768))
    save_a1111_pt(extra / "Twice.pt", textured(3, 768))
    save_file({"emb_params": textured(5, 768)}, own / "twice.safetensors")
    library = EmbeddingLibrary([extra])
    assert library.names() == ["EasyNegative", "deep", "twice", "Twice", "other"]
    assert library.find("EasyNegative").count == 1
    assert library.find("easynegative").count == 1  # A1111's tokenizer lowercases: case does not matter
    assert library.find("deep").count == 2 and library.find("other").count == 4
    assert library.find("Twice").count == 3 and library.find("twice").count == 5  # exact case first
    assert library.find("embedding", False) is None and library.find("cat") is None
    assert library.find("sub/deep", explicit=True).count == 2
    assert library.find("deep.pt", explicit=True).count == 2
    assert library.find("EasyNegative.safetensors", explicit=True).count == 1
    assert library.find("twice.pt", explicit=True).count == 3
    with pytest.raises(NetworkFileError, match="'missing' was not found in the embeddings folders") as exc:
        library.find("missing", explicit=True)
    assert str(own) in str(exc.value) and str(extra) in str(exc.value)
    with pytest.raises(NetworkFileError, match="several embeddings are named 'TWICE'") as exc:
        library.find("TWICE")  # two files differ from it only in case: no silent choice
    assert "Twice.pt" in one_line(exc) and "twice.safetensors" in str(exc.value)
    save_a1111_pt(extra / "EasyNegative.pt", textured(3, 768))  # the same name in two folders
    library.refresh()
    with pytest.raises(NetworkFileError, match="several embeddings are named 'EasyNegative'"):
        library.find("EasyNegative")


def test_library_rereads_a_rewritten_file_and_its_state_changes(tmp_path):
    path = tmp_path / "e.safetensors"
    save_file({"emb_params": textured(1, 768)}, path)
    library = EmbeddingLibrary([tmp_path])
    first, state = library.find("e"), library.state
    assert library.find("e") is first  # cached
    save_file({"emb_params": textured(2, 768, seed=9)}, path)
    import os
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    library.refresh()
    assert library.state != state
    assert library.find("e").count == 2


def test_index_is_torch_free_and_ignores_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    save_file({"emb_params": textured(1, 768)}, tmp_path / "a.safetensors")
    index = index_embeddings([tmp_path])
    assert [p.name for p in index.files] == ["a.safetensors"]
    assert index.resolve("notes") is None


# --- against diffusers ---

class _Loader:
    """The least a diffusers pipeline needs to run TextualInversionLoaderMixin.load_textual_inversion."""

    hf_device_map = None

    def __init__(self, tokenizer, text_encoder):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder

    @property
    def components(self):
        return {"tokenizer": self.tokenizer, "text_encoder": self.text_encoder}


def diffusers_prompt_embeds(model, emb_path, token, prompt):
    from diffusers.loaders import TextualInversionLoaderMixin

    model = reference_copy(model)  # diffusers' loader needs transformers' class (it resizes the embeddings)
    loader = type("Pipe", (_Loader, TextualInversionLoaderMixin), {})(new_reference_tokenizer(), model)
    loader.load_textual_inversion(str(emb_path), token=token)
    prompt = loader.maybe_convert_prompt(prompt, loader.tokenizer)
    ids = loader.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(ids.input_ids).last_hidden_state


@pytest.mark.parametrize("count", [1, 3])
def test_prompt_embeddings_equal_diffusers_load_textual_inversion(tmp_path, count):
    model = tiny_clip()
    emb_path = save_a1111_pt(tmp_path / "qxtoyemb.pt", textured(count, 32, seed=11) * 2)
    prompt = "a photo of qxtoyemb on a red sofa, detailed"
    reference = diffusers_prompt_embeds(copy.deepcopy(model), emb_path, "qxtoyemb", prompt)
    encoder = PromptEncoder([TextEncoder(model, EOS, "last")])
    encoder.embeddings = EmbeddingLibrary([tmp_path])
    ours = encoder.encode(prompt).context
    plain = PromptEncoder([TextEncoder(model, EOS, "last")]).encode(prompt.replace("qxtoyemb", "cat")).context
    assert ours.shape == reference.shape == (1, 77, 32)
    assert (ours - reference).abs().max().item() <= 1e-5
    assert (ours - plain).abs().max().item() > 1e-2  # the vectors changed the encoding


def diffusers_hidden(model, state, token, prompt, pad, layer=-1):
    """diffusers' load_textual_inversion + maybe_convert_prompt on one encoder; hidden state `layer`, or the
    final-normed last one (SD 1.x) for -1."""
    from diffusers.loaders import TextualInversionLoaderMixin

    model = reference_copy(model)  # diffusers' loader needs transformers' class (it resizes the embeddings)
    loader = type("Pipe", (_Loader, TextualInversionLoaderMixin), {})(new_reference_tokenizer(), model)
    loader.load_textual_inversion(state, token=token)
    ids = loader.tokenizer(loader.maybe_convert_prompt(prompt, loader.tokenizer)).input_ids
    ids = torch.tensor([ids + [pad] * (77 - len(ids))])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    return out.last_hidden_state if layer == -1 else out.hidden_states[layer]


def test_sdxl_prompt_embeddings_equal_diffusers_on_both_encoders(tmp_path):
    clip_l, bigg = tiny_clip(32, seed=1), tiny_clip(48, seed=2, projection=True)
    vl, vg = textured(2, 32, seed=3), textured(2, 48, seed=4)
    save_file({"clip_l": vl, "clip_g": vg}, tmp_path / "qxxlemb.safetensors")
    prompt = "qxxlemb, a castle at dusk"
    reference = torch.cat([
        diffusers_hidden(copy.deepcopy(clip_l), {"qxxlemb": vl}, "qxxlemb", prompt, EOS, layer=-2),
        diffusers_hidden(copy.deepcopy(bigg), {"qxxlemb": vg}, "qxxlemb", prompt, OPENCLIP_PAD, layer=-2),
    ], dim=-1)
    encoder = PromptEncoder([TextEncoder(clip_l, EOS, "penultimate_no_norm"),
                             TextEncoder(bigg, OPENCLIP_PAD, "penultimate_no_norm")])
    encoder.embeddings = EmbeddingLibrary([tmp_path])
    ours = encoder.encode(prompt).context
    assert ours.shape == reference.shape == (1, 77, 80)
    assert (ours - reference).abs().max().item() <= 1e-5


def test_encoding_with_an_embedding_leaves_the_encoder_untouched(tmp_path):
    model = tiny_clip()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    encoder = TextEncoder(model, EOS, "last")
    prompt_encoder = PromptEncoder([encoder])
    save_file({"emb_params": textured(2, 32)}, tmp_path / "pair.safetensors")
    prompt_encoder.embeddings = EmbeddingLibrary([tmp_path])
    with_embedding = prompt_encoder.encode("a pair").context
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.embeddings.token_embedding._forward_hooks  # the seam is removed after the call
    plain = PromptEncoder([encoder]).encode("a pair").context
    assert (with_embedding - plain).abs().max() > 1e-2


@pytest.mark.slow
def test_full_size_sd1_embedding_equals_diffusers(tmp_path):
    from sdstudio.engine.text_encoder import clip_l_config

    torch.manual_seed(0)
    model = CLIPTextModel(clip_l_config()).eval()
    emb_path = save_a1111_pt(tmp_path / "qxfullemb.pt", textured(6, 768, seed=7) * 0.05)
    prompt = "masterpiece, qxfullemb, a portrait of a woman " + "in a garden " * 5
    reference = diffusers_hidden(copy.deepcopy(model), str(emb_path), "qxfullemb", prompt, EOS)
    encoder = PromptEncoder([TextEncoder(model, EOS, "last")])
    encoder.embeddings = EmbeddingLibrary([tmp_path])
    ours = encoder.encode(prompt).context
    error = (ours - reference).abs().max().item()
    print(f"full-size SD 1.x embedding vs diffusers: max abs difference {error:.2e}")
    assert error <= 1e-5 * max(1.0, reference.abs().max().item())


@pytest.mark.parametrize("size", [[None], "ab", [2**80, 768]])
def test_header_count_of_a_hostile_archive_is_unknown_not_a_crash(tmp_path, size):
    class Junk:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, ("storage", 0, size, ())

    path = tmp_path / "junk.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("junk/data.pkl", pickle.dumps({"emb_params": Junk()}, protocol=2))
    count = vector_count(path)
    assert count is None or count == 2**80  # an absurd count: the grammar refuses more than 75 vectors
    with pytest.raises(NetworkFileError):
        read_embedding(path)


def test_a_file_far_larger_than_an_embedding_is_refused_before_reading(tmp_path, monkeypatch):
    from sdstudio.engine import embeddings

    path = tmp_path / "checkpoint.safetensors"
    save_file({"emb_params": textured(4, 768)}, path)
    monkeypatch.setattr(embeddings, "MAX_FILE_BYTES", path.stat().st_size - 1)
    monkeypatch.setattr(embeddings, "load_tensors", lambda *a: pytest.fail("read a file it should refuse"))
    with pytest.raises(NetworkFileError, match="far more than an embedding"):
        read_embedding(path)


def test_a_missing_file_is_refused_in_one_line(tmp_path):
    with pytest.raises(NetworkFileError, match="gone.pt.: cannot be read"):
        read_embedding(tmp_path / "gone.pt")
