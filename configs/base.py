"""SATracker-B: ViT-B/16 + BERT-base, template 128 / search 256, as in the paper.

Usage: `satracker train --config configs/base.py --workdir DIR [--config.key=value ...]`.
Every choice the SPEC marks *(config)* is a field here; `tiny.py` and `large.py` start from this.
"""
import ml_collections


def get_model_config(size: str = "base") -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.template_size = 128
  m.search_size = 256
  m.patch_size = 16
  m.max_text_len = 40
  # Visual branch: MAE/OSTrack ViT layout, one-stream joint attention over [Z; X].
  m.vit = ml_collections.ConfigDict(dict(
      dim=768, depth=12, heads=12, mlp_ratio=4.0, ln_eps=1e-6,
      pretrain_grid=14,  # position embeddings of pretrained weights are 14x14 (224/16)
  ))
  # Text branch: BERT-base-uncased layout.
  m.bert = ml_collections.ConfigDict(dict(
      vocab_size=30522, dim=768, layers=12, heads=12, intermediate=3072,
      max_position=512, type_vocab=2, ln_eps=1e-12,
  ))
  # Stage i runs ViT block i with BERT layer text_layer_map[i]; () = identity (i -> i); -1 = no
  # text layer at that stage (the text passes through). A visual depth larger than the text depth
  # needs an explicit map (see large/tiny).
  m.text_layer_map = ()
  # Synchronous Learning Backbone fusion.
  m.tem_layers = (1, 3, 5)
  m.sam_layers = (7, 9, 11)
  m.dm_layers = (7, 9, 11)  # default: the SAM stages
  m.use_tem = True
  m.use_sam = True
  m.use_text = True
  m.fusion_heads = 8
  m.fusion_mlp = False  # TEM/SAM are attention-only residual blocks
  # Every TEM/SAM update is scaled by tanh(gate); 0 = the SPEC's init (the SLB starts as the
  # pretrained ViT + BERT). From-scratch configs may open the gates at the start.
  m.fusion_gate_init = 0.0
  # Dense-matching projection.
  m.dm_dim = 256
  m.dm_tau_init = 0.07
  # OSTrack centre head.
  m.head_channels = 256
  m.head_layers = 4
  # Compute dtype: "auto" = bfloat16 on GPU / TPU (f32 parameters, optimizer state, losses,
  # softmax and LayerNorm statistics), float32 on CPU; "float32" or "bfloat16" forces one.
  m.dtype = "auto"
  # Attention kernel of every branch (jax.nn.dot_product_attention): "xla" everywhere, or "cudnn"
  # for cuDNN's fused kernel on NVIDIA GPUs in bf16 (XLA is used where cuDNN does not apply).
  m.attention_impl = "xla"
  # Rematerialisation of each ViT block / BERT layer / TEM / SAM in the backward pass:
  # "none", "full" (keep block inputs only) or "dots" (also keep Dense outputs). Names unchanged.
  m.remat = "none"
  # Run the ViT blocks (and the BERT layers) between two fusion/DM stages as one lax.scan over
  # their stacked parameters instead of unrolled: same result and parameters, remat memory that
  # does not depend on the compiler's schedule; unrolled is faster (fusion across blocks, CUDA
  # graphs) and base's chains are two blocks long (models/slb.py).
  m.scan_layers = False
  if size == "large":
    m.vit.update(dim=1024, depth=24, heads=16)
    # 24 visual stages, 12 BERT layers: BERT layer j runs at stage 2j+1 and the even stages pass the
    # text through, so with all gates at 0 the text branch is exactly (pretrained) BERT-base.
    m.text_layer_map = tuple(i // 2 if i % 2 else -1 for i in range(24))
    m.tem_layers = (3, 7, 11)
    m.sam_layers = (15, 19, 23)
    m.dm_layers = (15, 19, 23)
  return m


# The arguments get_config understands (`configs/base.py:large`); any other is an error.
ARGS = ("base", "large")


def get_config(arg=None):
  """arg: optional 'size' override (base|large) for quick variants."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = get_model_config(arg or "base")

  c.loss = ml_collections.ConfigDict(dict(
      focal_weight=1.0, giou_weight=2.0, l1_weight=5.0, dm_weight=1.0,
      focal_alpha=2.0, focal_beta=4.0,  # CornerNet/OSTrack focal exponents
      heatmap_sigma_factor=1.0 / 6.0,   # Gaussian radius as in OSTrack's generate_heatmap
  ))

  # Tokenizer: "wordpiece" (BERT vocab.txt) or "sentencepiece" (.model file).
  c.text = ml_collections.ConfigDict(dict(
      tokenizer="wordpiece", vocab_file="", spm_model="", lower_case=True,
  ))

  c.data = ml_collections.ConfigDict()
  # name -> dict(root=..., weight=..., split=...); readers in data_pipelines/readers.py.
  c.data.datasets = ml_collections.ConfigDict(dict(
      lasot=dict(root="", weight=1.0, split="train"),
      tnl2k=dict(root="", weight=1.0, split="train"),
      otb99_lang=dict(root="", weight=1.0, split="train"),
  ))
  c.data.max_gap = 200
  c.data.template_factor = 2.0
  c.data.search_factor = 4.0
  c.data.search_center_jitter = 3.0
  c.data.search_scale_jitter = 0.25
  c.data.brightness_jitter = 0.2
  c.data.grayscale_prob = 0.05
  # Horizontal flip of the sample (any sentence: its left/right words, if any, are swapped with it;
  # data_pipelines/processing.py step 5).
  c.data.flip_prob = 0.5
  # Training protocols (UVLTrack's mix): nl_bb = box + sentence, bb = sentence dropped,
  # nl = grounding sample (whole frame, blank template; satracker_jax/grounding.py).
  c.data.protocols = ml_collections.ConfigDict(dict(nl_bb=1.0, bb=0.0, nl=0.0))
  # JPEG decoded at 1/2, 1/4, 1/8 when the crop shrinks the frame >= 2x that (0: off; 2: closer
  # to the tracker's crops, ~15% more CPU; data_pipelines/crop_window.py states the differences).
  c.data.jpeg_dct_oversample = 1.0
  # Who makes the pixels: "tf" (tf.data graph, data_pipelines/sampler.py; reads bucket roots too) or
  # "numpy" (Pillow and numpy, data_pipelines/numpy_sampler.py: the same batches, no TensorFlow,
  # local or mounted roots only).
  c.data.backend = "tf"
  # How many input workers, and of which kind: "threads" or "processes", optionally ":N" for N of
  # them (threads:4, processes:16); without a count, one per CPU this process may use (its
  # affinity: what SLURM or taskset gave it). tf: threads only ("threads" = tf.data's autotuner
  # on TensorFlow's shared pool, "threads:N" = N samples at once on a private pool of N threads).
  # numpy: threads share the GIL (the planning and the crop glue hold it), so they make about one
  # core's worth of samples however many there are; "processes" (spawned, each with a copy of the
  # sample planner) scale with the cores: what a GPU host needs. The bytes never depend on it.
  c.data.workers = "threads"
  c.data.prefetch = 2
  # Sequence index cache; "" = beside the data set root (a bucket root: ~/.cache/satracker-jax/index).
  c.data.cache_dir = ""

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32  # global batch
  # "" = whatever devices the installed JAX has (logged); "gpu" / "tpu" / "cpu": stop at start-up
  # when JAX cannot see that platform (a CPU-only jaxlib on a GPU node: `make env ACCEL=cuda`)
  c.train.platform = ""
  c.train.total_steps = 300 * 1000
  c.train.log_every = 50
  c.train.checkpoint_every = 2000
  c.train.keep_checkpoints = 3
  c.train.keep_best = True
  c.train.grad_accum_steps = 1
  c.train.bf16 = False  # True forces model.dtype=bfloat16 (also on CPU); "auto" already is on GPU/TPU
  c.train.max_consecutive_nonfinite = 10
  # `satracker convert` output (pretrained ViT / BERT), or a model of ours to warm-start from (a
  # training workdir, its checkpoints folder or a params .npz: all weights; fresh optimizer)
  c.train.init_from = ""
  c.train.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # -1: all remaining devices
  c.train.tensorboard = True  # event files under WORKDIR/tensorboard/ (the tensorboard package; no TF)
  c.train.async_checkpointing = True
  # Test hooks: steps (1-based, as logged) whose loss is poisoned with NaN, and a signal the
  # process sends itself after a step, e.g. ("KILL", 30) or ("TERM", 30).
  c.train.debug_nan_steps = ()
  c.train.debug_signal = ()

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 4e-4
  c.optim.weight_decay = 1e-4
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.warmup_steps = 2000
  c.optim.schedule = "cosine"  # cosine | step
  c.optim.step_decay_at = 0.8  # fraction of total_steps where "step" decays
  c.optim.step_decay_factor = 0.1
  c.optim.min_lr_ratio = 0.0
  c.optim.clip_norm = 0.1
  c.optim.backbone_lr_mult = 0.1
  c.optim.layer_decay = 1.0  # <1: layer-wise lr decay over backbone blocks
  # (regex on '/'-joined param path, lr multiplier); first match wins, 0.0 freezes.
  c.optim.lr_rules = ()
  # Adam moments as two flat vectors over every parameter (one kernel each per step instead of one
  # per tensor): "auto" = when the mesh does not shard parameters (fsdp 1); true / false force it.
  c.optim.flat_moments = "auto"

  c.tracker = ml_collections.ConfigDict(dict(
      hann_window=True, template_update=False, template_update_interval=0,
      template_update_threshold=0.7,
  ))

  c.eval = ml_collections.ConfigDict(dict(parallel=1))
  return c
