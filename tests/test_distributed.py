"""The same prompts on a Dask cluster of worker processes and on Spark in local mode, against
the emulator: one request a distinct prompt across workers, a global limit, shards of the store
that a rerun and the notebook share, and no request while a job is planned."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from pizzagpt_magic.emulator import EmulatorThread, make_answer

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")

from pizzagpt_magic.distributed import (  # noqa: E402
    apply_batch,
    merge_shards,
    output_meta,
    spark_function,
    spark_schema,
    warm_up,
)
from pizzagpt_magic.store import Store  # noqa: E402

pytestmark = pytest.mark.distributed

TEMPLATE = "Is review {text} about delivery?"


def reviews(rows: int, distinct: int) -> pd.DataFrame:
    """``rows`` reviews with ``distinct`` texts, equal ones next to each other (so that each
    distinct prompt falls in one partition, as after ``ddf.shuffle`` on the text)."""
    repeat = rows // distinct
    return pd.DataFrame(
        {"text": [f"number {n // repeat}" for n in range(rows)], "n": list(range(rows))},
        index=[f"r{n}" for n in range(rows)],
    )


@pytest.fixture(scope="module")
def slow_emulator():
    with EmulatorThread(latency=0.01) as emu:
        yield emu


@pytest.fixture(scope="module")
def client(slow_emulator):
    """A Dask LocalCluster with 2 worker processes, once for the module; the workers reach
    the emulator through PIZZAGPT_URL and ask one prompt a request (PIZZAGPT_PACK=1)."""
    os.environ["PIZZAGPT_URL"] = slow_emulator.url
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as dask_client:
        yield dask_client
    cluster.close()


def test_the_partition_function_gives_the_rows_their_answers(emu, tmp_path):
    frame = reviews(12, 4)
    out = apply_batch(frame, TEMPLATE, store=tmp_path / "s.sqlite3")
    assert list(out.columns) == ["text", "n", "answer", "_error"]
    assert list(out.index) == list(frame.index)
    assert out["answer"].tolist() == [make_answer(TEMPLATE.format(text=t)) for t in frame.text]
    assert out["_error"].isna().all() and emu.requests == 4
    assert str(out["answer"].dtype) == "string"


def test_typed_classify_and_filter_columns(emu):
    frame = pd.DataFrame({"text": ["late by 5 minutes", "on time, 0 minutes late", "no idea"]})
    typed = apply_batch(frame, "{text}", schema="late bool, minutes int", keep=False, store=None)
    assert [str(t) for t in typed.dtypes] == ["boolean", "Int64", "string"]
    assert typed["minutes"].tolist() == [5, 0, typed["minutes"][2]]
    labels = apply_batch(frame, "{text}", operation="classify", labels=["late", "on time"])
    assert str(labels["label"].dtype) == "category"
    assert list(labels["label"].cat.categories) == ["late", "on time"]
    kept = apply_batch(frame, "Is {text} late?", operation="filter", keep=False)
    assert str(kept["keep"].dtype) == "boolean"
    meta = output_meta(frame, schema="late bool, minutes int")
    assert list(meta.columns) == ["text", "late", "minutes", "_error"] and len(meta) == 0


def test_spark_schema_names_the_output_columns():
    ddl = spark_schema("text string, n bigint", schema="late bool, minutes int, day date")
    assert (
        ddl == "text string, n bigint, `late` boolean, `minutes` bigint, `day` timestamp, "
        "`_error` string"
    )
    assert spark_schema("x string", operation="classify", labels=["a"], keep=False) == (
        "`label` string, `_error` string"
    )


def test_a_dask_job_asks_each_distinct_prompt_once_within_the_global_limit(
    client, slow_emulator, tmp_path
):
    frame = reviews(10_000, 2_000)
    ddf = dd.from_pandas(frame, npartitions=4, sort=False)
    slow_emulator.reset_stats()
    job = ddf.pizza.map(TEMPLATE, store_dir=tmp_path / "shards", limit=6, concurrency=8, pack=1)
    assert slow_emulator.requests == 0  # building the graph asks nothing
    out = job.compute()
    assert slow_emulator.requests == 2_000
    assert slow_emulator.max_in_flight <= 6
    assert out.loc[frame.index, "answer"].tolist() == [
        make_answer(TEMPLATE.format(text=t)) for t in frame.text
    ]
    assert out["_error"].isna().all()
    # The same job again: every row from the shards, on any worker.
    slow_emulator.reset_stats()
    ddf.pizza.map(TEMPLATE, store_dir=tmp_path / "shards", limit=6, pack=1).compute()
    assert slow_emulator.requests == 0
    # Merged into one store: idempotent, and counting what it added.
    target = tmp_path / "user.sqlite3"
    assert merge_shards(tmp_path / "shards", target) == 2_000
    assert merge_shards(tmp_path / "shards", target) == 0


def test_rows_answered_in_the_notebook_cost_nothing_on_the_cluster(client, slow_emulator, tmp_path):
    frame = reviews(3_000, 3_000)
    notebook = Store(tmp_path / "notebook.sqlite3")
    sample = frame.sample(500, random_state=1)
    sample.pizza.map(TEMPLATE, store=notebook, progress=False, pack=1)
    notebook.flush()
    notebook.close()
    slow_emulator.reset_stats()
    out = (
        dd.from_pandas(frame, npartitions=4, sort=False)
        .pizza.map(
            TEMPLATE,
            store_dir=tmp_path / "shards",
            store=tmp_path / "notebook.sqlite3",
            pack=1,
            concurrency=8,
        )
        .compute()
    )
    assert slow_emulator.requests == 2_500
    assert out["_error"].isna().all()


def test_a_killed_worker_costs_only_the_rows_in_flight(client, slow_emulator, tmp_path):
    """Kill one worker process mid-job: Dask runs its partition again on another worker, and
    the rows the killed worker had answered come from its shard."""
    template = "[[fault:latency=0.05]] Is review {text} about delivery?"
    frame = reviews(800, 800)
    ddf = dd.from_pandas(frame, npartitions=2, sort=False)
    options = {"store_dir": tmp_path / "shards", "pack": 1, "concurrency": 4}
    slow_emulator.reset_stats()
    future = client.compute(ddf.pizza.map(template, **options))
    while slow_emulator.requests < 150:
        time.sleep(0.02)
    pids = client.run(os.getpid)
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    try:
        out = future.result(timeout=180)
    except distributed.KilledWorker:
        # The scheduler gave up on the task: the rerun is the user's, as documented.
        client.wait_for_workers(2, timeout=60)
        out = ddf.pizza.map(template, **options).compute()
    assert out["answer"].notna().all() and out["_error"].isna().all()
    # Each distinct prompt once, plus at most what was in flight when the worker died.
    assert slow_emulator.requests <= 800 + 4


pyspark = None


def spark_session():
    global pyspark
    pyspark = pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[2]")
        .appName("pizzagpt-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )


def test_spark_local_mode_gives_the_same_answers(slow_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("PIZZAGPT_URL", slow_emulator.url)
    monkeypatch.setenv("PYSPARK_PYTHON", os.sys.executable)
    spark = spark_session()
    try:
        frame = reviews(400, 100)
        sdf = spark.createDataFrame(frame.reset_index(drop=True))
        slow_emulator.reset_stats()
        options = {"store_dir": str(tmp_path / "shards"), "pack": 1, "limit": 8, "parallel": 2}
        answered = sdf.mapInPandas(
            spark_function(TEMPLATE, **options), schema=spark_schema(sdf.schema)
        )
        assert slow_emulator.requests == 0  # the plan asks nothing
        out = answered.toPandas().sort_values("n")
        assert out["answer"].tolist() == [make_answer(TEMPLATE.format(text=t)) for t in frame.text]
        assert slow_emulator.requests == 100
        assert slow_emulator.max_in_flight <= 8
    finally:
        spark.stop()


def test_the_shards_stay_readable_while_a_worker_writes(tmp_path, emu):
    from pizzagpt_magic.distributed.shards import LayeredStore

    first = LayeredStore(tmp_path)
    first.put("k", "p", "m", "text", {})
    first.flush()
    seen = []

    def other() -> None:
        from pizzagpt_magic.store import ReadOnlyStore

        seen.append(ReadOnlyStore(first.path).get("k"))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [{"text": "text", "meta": {}}]
    assert Path(first.path).name.startswith("shard-")
    first.close()


def test_cache_merge_on_the_command_line(tmp_path, monkeypatch, capsys):
    from pizzagpt_magic.cli import main
    from pizzagpt_magic.distributed.shards import LayeredStore

    shard = LayeredStore(tmp_path / "shards")
    for n in range(3):
        shard.put(f"key{n}", "pizzagpt", "gpt-4o-mini", f"answer {n}", {})
    shard.flush()
    monkeypatch.setenv("PIZZAGPT_STORE", str(tmp_path / "user.sqlite3"))
    assert main(["cache", "merge", str(tmp_path / "shards")]) == 0
    assert "Added 3 answers" in capsys.readouterr().out
    assert main(["cache", "merge", str(tmp_path / "shards")]) == 0
    assert "Added 0 answers" in capsys.readouterr().out
    assert main(["cache", "merge", str(tmp_path / "nowhere")]) == 2
    assert Store(tmp_path / "user.sqlite3").get("key2")["text"] == "answer 2"
    shard.close()


def test_ray_data_map_batches_gives_the_same_answers(slow_emulator, tmp_path):
    ray = pytest.importorskip("ray")
    env = {"PIZZAGPT_URL": slow_emulator.url, "PIZZAGPT_STORE": "", "PIZZAGPT_PACK": "1"}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    try:
        frame = reviews(200, 50)
        slow_emulator.reset_stats()
        shards = str(tmp_path / "shards")
        out = (
            ray.data.from_pandas(frame.reset_index(drop=True))
            .map_batches(
                lambda batch: apply_batch(batch, TEMPLATE, store_dir=shards, limit=8, parallel=2),
                batch_format="pandas",
            )
            .to_pandas()
            .sort_values("n")
        )
        assert out["answer"].tolist() == [make_answer(TEMPLATE.format(text=t)) for t in frame.text]
        assert slow_emulator.requests <= 50 + 8  # a batch boundary may split equal texts
        assert slow_emulator.max_in_flight <= 8
    finally:
        ray.shutdown()


def test_a_saved_prompt_runs_on_the_cluster_with_its_schema(client, slow_emulator, tmp_path):
    from pizzagpt_magic.prompts import SavedPrompt

    rated = SavedPrompt("lateness", "{text}", schema="late bool, minutes int")
    frame = pd.DataFrame({"text": ["late by 5 minutes", "on time, 0 minutes late"] * 4})
    ddf = dd.from_pandas(frame, npartitions=2, sort=False)
    slow_emulator.reset_stats()
    job = ddf.pizza.map(rated, store_dir=tmp_path / "shards", pack=1)
    # The saved prompt is read in the notebook: its schema shapes the meta, nothing asked.
    assert list(job.columns) == ["text", "late", "minutes", "_error"]
    assert slow_emulator.requests == 0
    out = job.compute()
    assert out["minutes"].tolist() == [5, 0] * 4 and out["_error"].isna().all()


def test_warm_up_imports_what_a_partition_needs_and_sends_nothing(client, slow_emulator):
    slow_emulator.reset_stats()
    client.run(warm_up)
    imported = client.run(warm_up)  # a second time: nothing left to import
    assert all(names == [] for names in imported.values())
    assert slow_emulator.requests == 0
