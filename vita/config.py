"""Typed config schemas, stored in Hydra's ConfigStore and checked when a config is composed.

``conf/config.yaml`` starts its defaults list with ``vita_config`` (the :class:`Config` schema
below), so every group (``model``, ``data``, ``stage``, ``engine``, ``experiment``) merges into
typed dataclasses: an unknown key or a wrong type fails at compose time, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from vita.resolvers import ASSETS, MAX_DIRNAME, demo_data_dir, flat_dirname, register_resolvers  # noqa: F401

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass(kw_only=True)
class VisionConfig:
    tower: Optional[str] = None
    """Registry key of the vision tower (``vita.registry.VISION_TOWERS``); ``null`` = no vision input."""
    pretrained: Optional[str] = None
    """Tower weights: a safetensors/``.bin`` file or folder (transformers or OpenGVLab InternViT layout)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Shape overrides for the tower (``image_size``, ``num_hidden_layers`` ...)."""
    select_layer: Optional[int] = None
    """Hidden layer whose output is used; ``null`` = the tower's default (InternViT -1, SigLIP/CLIP -2)."""
    use_s2: bool = False
    """SigLIP only: the S2 multi-scale wrapper (features of every scale concatenated)."""
    s2_scales: list[int] = field(default_factory=list)
    """S2 image sizes, smallest first; empty = 1x, 2x, 3x the tower's size."""
    projector: str = "mlp2x_gelu"
    """Registry key of the projector (``vita.registry.PROJECTORS``; any ``mlpNx_gelu`` works)."""
    projector_pretrained: Optional[str] = None
    """Projector weights (e.g. VITA's ``mm_projector.bin``; the ``...mm_projector.`` prefix is stripped)."""


@dataclass(kw_only=True)
class AudioConfig:
    encoder: Optional[str] = None
    """Registry key of the audio encoder (``vita.registry.AUDIO_ENCODERS``); ``null`` = no audio input."""
    pretrained: Optional[str] = None
    """Encoder weights: VITA's ``final.pt`` (+ ``global_cmvn``), a transformers Whisper folder, or ``ct2:<folder>``."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Shape overrides for the encoder."""
    projector: str = "subsampling"
    """Registry key of the audio projector: ``subsampling`` (VITA's Conv1d adapter) or ``linear``."""
    projector_pretrained: Optional[str] = None
    """Adapter weights; a VITA ``final.pt`` holding ``adpter.*`` keys works too."""
    prompt_num: int = 0
    """VITA's learned audio prompt vectors prepended to every clip (``audio_prompt_num``; 0 = off)."""


@dataclass(kw_only=True)
class SpeechConfig:
    """Speech out (VITA-1.5 stage 3, docs/SPEECH.md): a codec and a decoder on the frozen LLM's hidden states."""

    codec: Optional[str] = None
    """Registry key of the speech codec (``vita.registry.SPEECH_CODECS``); ``null`` = the model does not speak."""
    codec_path: Optional[str] = None
    """The codec's folder (a fitted ``mel_rvq`` from stage 3.1, a Mimi/EnCodec folder or hub id)."""
    codec_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the codec entry (``mode`` for codec2, ``num_quantizers`` for mimi ...)."""
    decoder: Optional[str] = None
    """Registry key of the speech decoder (``vita.registry.SPEECH_DECODERS``: ``nar_ar``, ``vita15``, ``ctc`` ...)."""
    decoder_overrides: dict[str, Any] = field(default_factory=dict)
    """Shape overrides of the decoder (``layers``, ``hidden`` ...)."""
    decoder_pretrained: Optional[str] = None
    """Decoder weights (a safetensors file or an export's decoder folder)."""
    loss_weight: float = 1.0
    """Weight of the speech-code loss (normalised per code frame over the global batch)."""
    codebook_weights: list[float] = field(default_factory=list)
    """Loss weight per codebook (empty = 1 each)."""
    max_seconds: float = 30.0
    """Longest spoken answer the decoder is trained on; a longer one is a bad sample, never cut."""


@dataclass(kw_only=True)
class ModelConfig:
    backbone: str = MISSING
    """Registry key of the LLM backbone (``vita.registry.BACKBONES``), e.g. ``tiny-qwen2``."""
    pretrained: Optional[str] = None
    """Local HF folder or hub id to load weights from; ``null`` = random init from the registry shape."""
    gguf_file: Optional[str] = None
    """GGUF file name inside ``pretrained`` (transformers dequantises it)."""
    tokenizer: Optional[str] = None
    """Tokenizer folder or hub id; ``null`` = the one in ``pretrained``."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Shape overrides merged into the registry config (``hidden_size``, ``num_hidden_layers`` ...)."""
    attn_implementation: str = "sdpa"
    """``sdpa`` (default), ``eager`` or ``flash_attention_2`` (needs flash-attn and a GPU)."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint folder to run. Off unless you trust the source."""
    vision: VisionConfig = field(default_factory=VisionConfig)
    """Vision tower + projector (``vision.tower: null`` = text/audio only)."""
    audio: AudioConfig = field(default_factory=AudioConfig)
    """Audio encoder + projector (``audio.encoder: null`` = text/vision only)."""
    router_aux_loss_coef: Optional[float] = None
    """MoE backbones: weight of the load-balancing loss; ``null`` = the backbone config's value."""
    state_head_classes: Optional[int] = None
    """User-state head size (VITA-FO); ``null`` = the backbone's ``vita_state_classes`` (0 = no head)."""
    state_loss_weight: float = 1.0
    """Weight of the user-state head's cross-entropy in the loss."""
    state_class_weights: list[float] = field(default_factory=lambda: [1.0, 5.0, 1.0])
    """Per-class weights of that cross-entropy (VITA-FO uses 1, 5, 1)."""
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    """Speech out: codec + decoder (``speech.decoder: null`` = text out only)."""
    quantization: Optional[str] = None
    """QLoRA: load the LLM in ``4bit`` (nf4, double quant) or ``8bit`` through bitsandbytes; ``null`` = off."""


@dataclass(kw_only=True)
class SourceConfig:
    """One dataset of a mixture (``format: vita``)."""

    name: str = MISSING
    """A label for logs and ``vita.check`` tables."""
    annotations: list[str] = field(default_factory=list)
    """VITA/LLaVA ``.json`` lists or ``.jsonl`` files (JSONL is read line by line through byte offsets)."""
    image_root: Optional[str] = None
    """Folder that image paths are relative to (paths may not leave it)."""
    video_root: Optional[str] = None
    """Folder that video paths are relative to."""
    audio_root: Optional[str] = None
    """Folder that audio paths are relative to."""
    ratio: float = 1.0
    """Share of this dataset's samples to use (seeded subsample; > 1 repeats it)."""


@dataclass(kw_only=True)
class ShardSetConfig:
    """One set of tar shards written by ``python -m vita.data.shard`` (``format: shards``)."""

    name: str = MISSING
    """A label for logs."""
    url: str = MISSING
    """The shard folder, its ``manifest.json``, or a brace pattern of shards beside the manifest
    (``DIR/shard-{000000..000009}.tar``); a local path or an ``http(s)://`` URL."""
    ratio: float = 1.0
    """Share of this set's shards used per epoch (whole shards, seeded per epoch; > 1 repeats them)."""


@dataclass(kw_only=True)
class EvalSetConfig:
    """One named eval set (``data.eval.<name>``): VITA-format records whose last turn is the reference answer."""

    annotations: list[str] = field(default_factory=list)
    """VITA/LLaVA ``.json`` / ``.jsonl`` files; each record's last assistant turn is the reference."""
    image_root: Optional[str] = None
    """Folder that image paths are relative to."""
    video_root: Optional[str] = None
    """Folder that video paths are relative to."""
    audio_root: Optional[str] = None
    """Folder that audio paths are relative to."""
    metric: Any = "loss"
    """A metric or a list of them (``metric=wer`` or ``metric=[wer,cer]``): ``loss`` / ``ppl`` (forward only)
    and generation metrics ``wer``, ``cer``, ``exact``, ``contains``, ``choice`` (``vita.eval.metrics.METRICS``);
    with a speech decoder ``asr_wer``, ``asr_cer`` (the spoken answer's ASR transcript against its text) and
    ``first_chunk_ms``.
    ``loss`` and ``ppl`` are always reported."""
    limit: int = 0
    """Use only the first N records (0 = all)."""
    max_new_tokens: int = 64
    """Longest generated answer (generation metrics)."""
    batch_size: int = 4
    """Samples per forward / generate call on each rank."""
    asr: Optional[str] = None
    """ASR of the speech metrics ``asr_wer`` / ``asr_cer``: None = the shipped Whisper tiny.en, or a Whisper folder
    (CTranslate2 ``model.bin`` or transformers ``save_pretrained``); see ``vita.eval.asr.load_asr``."""


@dataclass(kw_only=True)
class DataConfig:
    name: str = MISSING
    """A label for logs and run dirs."""
    format: str = "chatterbot"
    """Dataset format key (``vita.registry.DATASETS``)."""
    language: str = "english"
    """chatterbot: corpus language folder."""
    files: list[str] = field(default_factory=list)
    """chatterbot: corpus files to read (empty = all)."""
    template: str = "chatml"
    """Chat template key (``vita.registry.TEMPLATES``)."""
    system_prompt: Optional[str] = None
    """System prompt; ``null`` = the template's default, ``""`` = none."""
    max_length: int = 256
    """Longest tokenised sample; what happens to longer ones is ``overlong``."""
    overlong: str = "truncate"
    """A sample longer than ``max_length``: ``truncate`` (cut the text at the end; a cut into a media block or
    to no supervised token is a bad sample), ``skip`` (drop it), ``fail`` (stop, naming it). Never silent: the
    run warns once with the count and the first few, and logs the supervised tokens truncation removes."""
    max_images: int = 0
    """Most images in one sample (0 = no limit); a sample with more is a bad sample."""
    sampler: str = "random"
    """Sampler key (``vita.registry.SAMPLERS``)."""
    sampler_options: dict[str, Any] = field(default_factory=dict)
    """More keyword options of the sampler (its constructor's arguments); one it does not take is refused at
    compose time, naming the key."""
    num_workers: int = 0
    """DataLoader worker processes (0 = load in the training process)."""
    limit: int = 0
    """Use only the first N samples (0 = all); for smoke tests."""
    on_bad_sample: str = "fail"
    """``fail``: stop with the sample id and reason; ``skip``: drop it, count it, log why."""
    datasets: list[SourceConfig] = field(default_factory=list)
    """``format: vita``: the datasets of the mixture."""
    mixture_seed: int = 42
    """Seed of the subsampling and shuffling of the mixture (the same on every rank)."""
    shards: list[ShardSetConfig] = field(default_factory=list)
    """``format: shards``: the shard sets of the mixture (``{name, url, ratio}``), read as streams: each rank
    and data worker takes its own shards, reads only the manifests at start-up (vita/data/shards/)."""
    shuffle_buffer: int = 1000
    """``format: shards``: samples held and emitted in a seeded random order, then refilled (1 = stream order)."""
    shard_timeout: float = 60.0
    """``format: shards``: seconds an http(s) shard may stall (connect or read) before it counts as unreadable."""
    media_spec: Optional[str] = None
    """Encoder facts (tile size, tokens per tile, audio features) when the model gives none:
    a key of ``vita.data.spec.PRESETS`` (``vita``, ``whisper``, ``tiny``); ``null`` = from the model."""
    min_tiles: int = 1
    """Dynamic tiling: fewest tiles per image (before the thumbnail)."""
    max_tiles: int = 12
    """Dynamic tiling: most tiles per image (VITA: 12, +1 thumbnail)."""
    use_thumbnail: bool = True
    """Append the whole image as one more tile when an image has several."""
    image_aspect_ratio: str = "square"
    """``square``: tile the raw image; ``pad``: pad to a square with the mean colour first."""
    min_frames: int = 4
    """Video: fewest frames (uniform, duplicates allowed)."""
    max_frames: int = 16
    """Video: most frames (uniform)."""
    video_fps: float = 3.0
    """Video: frames sampled per second before the min/max limits (VITA trains with 3)."""
    dither: float = 0.0
    """Kaldi fbank dither (VITA's config: 1.0; 0 = deterministic features)."""
    state_tokens: bool = False
    """Prefix answers with VITA's state characters (☞ spoken query, ☜ text query, ☟ inserted_id turn)."""
    index_cache: bool = True
    """Keep a mixture's metadata index (lengths, problems) in ``~/.cache/vita/index`` (``$VITA_INDEX_CACHE``)."""
    vita_layout: bool = False
    """Lay out markers in user turns as VITA does (visual markers first, one newline after each)."""
    packing: bool = False
    """Pack samples into rows of ``max_length``; position ids restart per sample, attention stays inside
    each. With ``sampler: token_budget`` rows are filled across the batch (first-fit-decreasing over
    ``pack_window`` samples), ``token_budget // max_length`` rows per micro-batch; other samplers pack
    within each micro-batch."""
    pack_window: int = 1024
    """``token_budget`` + packing: samples the packer sees at once (more fills rows better, up to a point)."""
    token_budget: int = 0
    """``sampler: token_budget``: tokens per micro-batch (count x longest when padding; with packing, a
    multiple of ``max_length``: that many full rows)."""
    eval: dict[str, EvalSetConfig] = field(default_factory=dict)
    """Named eval sets run every ``train.eval_every`` steps and by ``python -m vita.eval`` (metrics
    ``eval/<name>/<metric>``). Add one from the command line with
    ``+data.eval={speech:{annotations:[a.jsonl],audio_root:DIR,metric:wer}}``, then change a key with
    ``data.eval.speech.limit=8``."""


@dataclass(kw_only=True)
class LoraConfig:
    r: int = 8
    """LoRA rank."""
    alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA branch input."""
    bias: str = "none"
    """Train biases too: ``none``, ``all`` (every bias of the group) or ``lora_only`` (of wrapped layers)."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Linear layer names inside this group to wrap (``[all-linear]`` = every linear layer of the group)."""
    init_from: Optional[str] = None
    """A saved PEFT adapter folder to start from."""


@dataclass(kw_only=True)
class GroupConfig:
    mode: str = "full"
    """``full`` (train), ``frozen`` or ``lora``."""
    lr: Optional[float] = None
    """Learning rate of this group; ``null`` = ``optim.lr``."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA settings, used when ``mode`` is ``lora``."""


@dataclass(kw_only=True)
class StageGroups:
    """One entry per module group of an OmniModel; a group the model lacks must stay at the default."""

    llm: GroupConfig = field(default_factory=GroupConfig)
    vision_tower: GroupConfig = field(default_factory=GroupConfig)
    vision_projector: GroupConfig = field(default_factory=GroupConfig)
    audio_encoder: GroupConfig = field(default_factory=GroupConfig)
    audio_projector: GroupConfig = field(default_factory=GroupConfig)
    heads: GroupConfig = field(default_factory=GroupConfig)
    speech_decoder: GroupConfig = field(default_factory=GroupConfig)


@dataclass(kw_only=True)
class StageConfig:
    name: str = MISSING
    """Stage name, written into checkpoints and exports."""
    groups: StageGroups = field(default_factory=StageGroups)
    """Per module group: ``mode`` (full | frozen | lora), ``lr`` and ``lora`` settings. Default: full at optim.lr."""
    init_from: Optional[str] = None
    """Weights to start from: an earlier stage's export (``<run>/final``), a checkpoint folder, a plain HF LLM,
    or ``vita:PATH``: a VITA-1.5 / 1.0 whole-model folder (``cfg.model`` then becomes that folder's model) or
    VITA's ``mm_projector.bin`` / ``audio_adpter.bin`` (their group only)."""
    init_required: Optional[str] = None
    """What this stage continues from (e.g. ``stage 1's export (experiment=stage1_qwen)``): when set and
    ``init_from`` is not, the run stops at once with one line saying so."""
    init_allow_bin: bool = False
    """Let ``stage.init_from`` read pickled ``.bin`` weights (``torch.load(weights_only=True)``); off = safetensors only."""
    init_partitioned: bool = True
    """Under ``engine.zero_stage=3``, build a ``vita:PATH`` model straight into ZeRO-3 partitions (each rank holds
    its part from the start); false: every rank loads the whole model and ``deepspeed.initialize`` partitions it."""
    task: str = "train"
    """``train`` (the engine trains the groups) or ``codec`` (stage 3.1: fit the speech codec on the data's speech)."""
    codec_fit: dict[str, Any] = field(default_factory=dict)
    """``task: codec``: options of the fit (``mel_rvq``: ``iters``, ``max_frames``; vita/codec_stage.py)."""
    export: str = "full"
    """``full``: the LLM (HF folder) + every other group; ``trainable``: only the groups this stage trains."""


@dataclass(kw_only=True)
class EngineConfig:
    zero_stage: int = 0
    """DeepSpeed ZeRO stage: 0, 1, 2 or 3."""
    offload_optimizer: bool = False
    """ZeRO-2/3: optimizer state in CPU memory."""
    offload_param: bool = False
    """ZeRO-3: parameters in CPU memory."""
    precision: str = "fp32"
    """``fp32``, ``bf16`` or ``fp16``."""
    micro_batch_size: int = 4
    """Samples per rank per forward."""
    grad_accum: int = 1
    """Micro-batches per optimizer step. Global batch = micro_batch_size x grad_accum x world size."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    optimizer_impl: str = "auto"
    """``torch`` (torch AdamW), ``fused`` (DeepSpeed's), ``auto`` = fused on GPU, torch on CPU."""
    fused_loss: str = "auto"
    """The LM loss without ``[tokens x vocab]`` logits: ``chunked`` (head + cross-entropy + their
    gradients in chunks of tokens, vita/model/loss.py), ``liger`` (liger-kernel's fused linear cross-entropy, GPU, if installed),
    ``off`` (plain logits), ``auto`` = liger if installed on a GPU (below ZeRO-3), else chunked."""
    stage3_param_persistence_threshold: int = 100000
    """ZeRO-3: parameters smaller than this stay unpartitioned."""
    timeout_min: int = 30
    """Collective timeout; a rank that waits longer fails instead of hanging."""
    peak_tflops: Optional[float] = None
    """Peak TFLOP/s of one device at the training precision (e.g. 989 for an H100 SXM in bf16 dense);
    set, the log reports ``mfu`` = achieved model TFLOP/s per device / this. ``null`` = no MFU
    (``flops_per_step`` and ``tflops`` are logged anyway; formula in ``vita/engine/flops.py``)."""
    sequence_parallel: int = 1
    """Ranks that share each sample's sequence (DeepSpeed-Ulysses attention, docs/long_context.md); the data
    parallel degree is world size / this. Must divide the world size and the attention heads."""
    max_tokens_per_rank: int = 0
    """Refuse a micro-batch whose per-rank share of the sequence (length / sequence_parallel) is longer than
    this (the tokens one device's activations hold); 0 = no limit."""
    tiled_mlp: int = 0
    """Run each LLM MLP in this many tiles along the sequence (DeepSpeed's TiledMLP: its activations for one
    tile at a time, recomputed in backward); 0 = off. The logits+loss tiling is ``fused_loss=chunked``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Raw DeepSpeed config entries merged last (expert use)."""


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = 1e-3
    """Peak learning rate (groups may set their own in the stage)."""
    weight_decay: float = 0.0
    """AdamW weight decay; never applied to biases and norms."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    scheduler: str = "cosine"
    """``cosine``, ``linear`` or ``constant`` after warmup."""
    warmup_steps: int = 0
    """Linear warmup steps (takes precedence over ``warmup_ratio``)."""
    warmup_ratio: float = 0.0
    """Warmup as a fraction of the total steps."""
    min_lr_ratio: float = 0.0
    """Floor of the decay, as a fraction of the peak lr."""


@dataclass(kw_only=True)
class TrainConfig:
    max_steps: int = 100
    """Optimizer steps to run; 0 = run ``epochs`` epochs."""
    epochs: int = 1
    """Epochs, when ``max_steps`` is 0."""
    seed: int = 42
    log_every: int = 10
    """A metrics line on the console every N steps (and at the last); ``metrics.jsonl`` keeps every step."""
    ckpt_every: int = 0
    """Save a checkpoint every N steps (0 = only at the end)."""
    keep_last: int = 2
    """Checkpoints to keep."""
    resume: str = "auto"
    """``auto``: continue from the newest complete checkpoint in the run dir; ``never``: refuse a used run dir."""
    resume_from: Optional[str] = None
    """A checkpoint folder (``.../checkpoints/step_00000100``) to start from."""
    nan_policy: str = "stop"
    """A NaN/inf loss or gradient: ``stop`` with the step and sample ids, or ``skip`` the step."""
    eval_every: int = 0
    """Run the ``data.eval`` sets every N steps and at the last step (0 = never during training)."""
    eval_at_start: bool = False
    """Also run them before the first step (step 0), for a before/after comparison."""
    keep_best: Optional[str] = None
    """``<set>/<metric>`` (e.g. ``speech/wer``): keep the checkpoint with the best value of that eval metric
    (``checkpoints/best``); ``train.keep_last`` never deletes it."""


@dataclass(kw_only=True)
class LoggingConfig:
    loggers: list[str] = field(default_factory=lambda: ["console", "jsonl"])
    """Any of ``console``, ``jsonl``, ``wandb``, ``tensorboard``."""
    progress_bar: bool = True
    """A tqdm bar on rank 0."""
    plot: bool = True
    """Write ``loss.png`` in the run dir at the end."""
    all_ranks: bool = False
    """Console lines (logs, library warnings) from every rank; by default ranks > 0 show errors only."""
    wandb_project: str = "vita"
    wandb_entity: Optional[str] = None


@dataclass(kw_only=True)
class RecipeStep:
    stage: str = MISSING
    """A ``conf/stage`` option."""
    name: Optional[str] = None
    """Step name for its run dir (default: the stage)."""
    overrides: list[str] = field(default_factory=list)
    """Extra overrides for this step only (``optim.lr=1e-4``, ``data=...``)."""


@dataclass(kw_only=True)
class SlurmConfig:
    """Site values for ``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml reads them).

    Set them once in ``conf/local/default.yaml``; change one launch with ``hydra.launcher.<key>=...``.
    """

    partition: Optional[str] = None
    """``--partition``; ``null`` = the cluster's default partition."""
    account: Optional[str] = None
    """``--account`` to charge."""
    qos: Optional[str] = None
    """``--qos`` (quality of service)."""
    constraint: Optional[str] = None
    """``--constraint`` on node features, e.g. ``h100``."""
    gpus_per_node: Optional[int] = None
    """GPUs per node; ``null`` on CPU-only nodes (no ``--gpus-per-node`` is sent)."""
    tasks_per_node: Optional[int] = None
    """Processes per node; ``null`` = one per GPU (``gpus_per_node``), or 1 without GPUs."""
    cpus_per_task: Optional[int] = None
    """CPU cores per process (data loading workers + 1 is a good start); ``null`` = the cluster's default."""
    mem_gb: Optional[int] = None
    """Memory per node in GB; ``null`` = the cluster's default."""
    setup: list[str] = field(default_factory=list)
    """Shell lines the batch script runs before ``srun`` (``module load ...``, ``source venv/bin/activate``)."""


@dataclass(kw_only=True)
class Config:
    name: str = "default"
    """Run name: the run dir is ``<output_root>/<name>/<overrides>``."""
    output_root: str = "outputs"
    """Where run dirs go; site configs set it in ``conf/local``."""
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    stage: StageConfig = MISSING
    engine: EngineConfig = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    recipe: list[RecipeStep] = field(default_factory=list)
    """Stages to run in order, each starting from the previous one's export (``vita.recipe``)."""
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    config_searchpath: list[str] = field(default_factory=list)
    """Site config folders (``file:///site/conf``) searched for ``data/``, ``model/`` ... options; set it in
    ``conf/local`` (Hydra reads ``hydra.searchpath`` only from the primary config; vita's commands pass
    this on as ``hydra.searchpath``). One run: ``--config-dir DIR`` or ``hydra.searchpath=[file://DIR]``."""



def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    ConfigStore.instance().store(name="vita_config", node=Config)


from vita.config_checks import ENUMS, GROUP_MODES, LOGGERS, suggest_key, validate  # noqa: E402,F401
