"""Benchmarks (`satracker bench {data,train,track}`): each prints a table and returns a JSON dict.

    from satracker_jax.bench import train
    result = train.run("configs/base.py", batch=32, bf16=True)

Each module's `run(config_spec, overrides=(), **options) -> dict` is a plain function; the verb
(`satracker_jax/cli/bench.py`) parses the options and writes the dict to `--json`. Benchmarks
measure; they never assert speed (tests do not time things).
"""
