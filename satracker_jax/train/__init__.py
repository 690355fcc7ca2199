"""Training: sharded train state, jitted step, Orbax checkpoints, metrics.

  sharding.py        mesh from `config.train.mesh`, fsdp parameter rule, global batches, multi-host init
  optimizer.py       AdamW + warmup/cosine|step schedule + per-parameter lr multipliers (regex rules)
  state.py           the train state pytree, its sharded creation, the jitted train step
  checkpoint.py      Orbax CheckpointManager (state / config / data position), `load_for_inference`
  metrics_writer.py  metrics.jsonl + optional TensorBoard + console lines (process 0)
  loop.py            `train(config, workdir)`: resume, data, step loop, preemption, NaN policy
  main.py            the `satracker train` verb
"""
