"""Checkpoints on an object store (`checkpoint.dir: s3://bucket/prefix`), against a real S3 API (moto's server):
the same promises as on a folder. There is no rename, so the manifest, written last, is the commit: a save killed
before it leaves a prefix that resume skips (and says so); a corrupted object is detected and `auto` falls back;
resume is exact; keep-N applies; async saves work. Credentials come from the AWS environment only and are printed
and stored nowhere."""

from __future__ import annotations

import secrets

import pytest

from checkpoint_support import assert_same_tensors, checkpoint_tensors, losses, train
from dist_train.checkpoint.storage import open_storage
from dist_train.errors import UsageError


def _client(s3):
    import boto3

    return boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], aws_access_key_id=s3["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"], region_name=s3["AWS_DEFAULT_REGION"])


@pytest.fixture
def bucket(s3):
    name = "ckpt-" + secrets.token_hex(4)
    _client(s3).create_bucket(Bucket=name)
    return name


def _objects(s3, bucket: str, prefix: str) -> dict[str, bytes]:
    client = _client(s3)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {k[len(prefix):]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _steps(objects: dict[str, bytes]) -> list[str]:
    return sorted({k.split("/")[0] for k in objects}, key=lambda s: int(s[len("step_"):]))


@pytest.fixture(scope="module")
def resumed_on_s3(s3, references, tmp_path_factory):
    """A run with async saves to S3 stopped after step 17, then resumed to the end."""
    name = "ckpt-resume"
    _client(s3).create_bucket(Bucket=name)
    run = tmp_path_factory.mktemp("s3") / "run"
    where = [f"checkpoint.dir=s3://{name}/run", "checkpoint.async=true"]
    first = train(run, *where, DIST_TRAIN_TEST_STOP_AFTER_STEP=17, **s3)
    after_stop = _steps(_objects(s3, name, "run/"))
    second = train(run, *where, **s3)
    return run, name, [first, second], after_stop


def test_async_saves_to_s3_resume_exactly_and_keep_n(resumed_on_s3, s3, references, tmp_path):
    run, name, (first, second), after_stop = resumed_on_s3
    assert after_stop == ["step_10", "step_15", "step_17"]  # keep: 3
    assert f"checkpoint: resumed from s3://{name}/run/step_17 (step 17)" in second.stdout
    assert losses(run) == losses(references.get("single"))
    objects = _objects(s3, name, "run/")
    assert _steps(objects) == ["step_20", "step_25", "step_30"]
    for key, data in objects.items():
        if key.startswith("step_30/"):
            (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / key).write_bytes(data)
    assert_same_tensors(checkpoint_tensors(tmp_path / "step_30", tmp_path),
                        checkpoint_tensors(references.get("single") / "checkpoints" / "step_30", tmp_path))


def test_credentials_are_printed_and_stored_nowhere(resumed_on_s3, s3):
    run, name, results, _ = resumed_on_s3
    secrets_ = [s3["AWS_ACCESS_KEY_ID"], s3["AWS_SECRET_ACCESS_KEY"]]
    for result in results:
        assert not any(s in result.stdout or s in result.stderr for s in secrets_)
    stored = [p for p in run.rglob("*") if p.is_file()]
    assert stored and not any(s.encode() in p.read_bytes() for p in stored for s in secrets_)
    assert not any(s.encode() in data for data in _objects(s3, name, "").values() for s in secrets_)


def test_killed_save_and_corrupted_object_are_passed_over(s3, bucket, references, tmp_path):
    """No rename on S3: a save killed before its manifest leaves step 20's objects without the manifest written
    last, so it is no checkpoint (resume says it skips it); step 15's shard corrupted on the server is detected by
    its checksum and resume falls back to step 10, then trains the same losses as an uninterrupted run."""
    run = tmp_path / "run"
    where = f"checkpoint.dir=s3://{bucket}/run"
    killed = train(run, where, check=False, DIST_TRAIN_TEST_KILL_AT="commit:20", **s3)
    assert killed.returncode == -9
    objects = _objects(s3, bucket, "run/")
    assert "step_20/.metadata" in objects and "step_20/checkpoint.json" not in objects
    client = _client(s3)
    key = "run/step_15/__0_0.distcp"
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    resumed = train(run, where, **s3)
    assert (f"checkpoint: skipping s3://{bucket}/run/step_20: no checkpoint.json (its manifest was deleted, or the "
            "save never finished)") in resumed.stdout
    assert (f"checkpoint: s3://{bucket}/run/step_15 is damaged (file __0_0.distcp does not match its SHA-256 "
            "checksum (altered or corrupted)); falling back to the previous one") in resumed.stdout
    assert f"resumed from s3://{bucket}/run/step_10 (step 10)" in resumed.stdout
    assert losses(run) == losses(references.get("single"))
    assert "checkpoint.json" in _objects(s3, bucket, "run/step_20/")  # saved again, committed this time


def test_credentials_in_the_url_are_refused():
    with pytest.raises(UsageError, match="credentials do not belong in the URL"):
        open_storage("s3://AKIAXX:secret@bucket/prefix")
