"""pytfe 1.5.0's configuration versions against a real cairn server over HTTPS, on both
metadata backends: create, upload (pytfe packs a directory), read, list, download, ingress
attributes; a refused archive leaves the version errored with the reason."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest
from pytfe import TFEClient
from pytfe.errors import TFEError
from pytfe.models import (
    ConfigurationStatus,
    ConfigurationVersionCreateOptions,
    ConfigurationVersionListOptions,
    WorkspaceCreateOptions,
)

from tests.support import api as tfe_api
from tests.support.configtar import file, targz

pytestmark = pytest.mark.e2e

CV_ID = re.compile(r"^cv-[A-Za-z0-9]+$")


def test_create_upload_read_list_download(tfe: TFEClient, org: str, tmp_path: Path) -> None:
    ws = tfe.workspaces.create(org, WorkspaceCreateOptions(name=tfe_api.unique_name("cv")))
    (tmp_path / "modules" / "m").mkdir(parents=True)
    (tmp_path / "main.tf").write_text('output "hello" { value = "world" }\n')
    (tmp_path / "modules" / "m" / "main.tf").write_text("# a module\n")

    # auto-queue-runs off: this test is about the configuration, not the run it would queue.
    options = ConfigurationVersionCreateOptions(auto_queue_runs=False, speculative=True)
    cv = tfe.configuration_versions.create(ws.id, options)
    assert CV_ID.match(cv.id)
    assert cv.status == ConfigurationStatus.PENDING
    assert cv.speculative is True and cv.auto_queue_runs is False
    assert cv.upload_url and cv.upload_url.startswith("https://")

    tfe.configuration_versions.upload(cv.upload_url, str(tmp_path))
    read = tfe.configuration_versions.read(cv.id)
    assert read.status == ConfigurationStatus.UPLOADED
    assert read.upload_url is None
    assert read.status_timestamps and "uploaded-at" in read.status_timestamps

    listed = list(
        tfe.configuration_versions.list(ws.id, ConfigurationVersionListOptions(page_size=10))
    )
    assert [c.id for c in listed] == [cv.id]

    archive = tfe.configuration_versions.download(cv.id)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["main.tf", "modules/m/main.tf"]
    assert tfe.configuration_versions.ingress_attributes(cv.id) is None

    # Used once: a second upload is refused.
    with pytest.raises(TFEError):
        tfe.configuration_versions.upload_tar_gzip(cv.upload_url, io.BytesIO(targz()))


def test_a_refused_archive_errors_the_version(tfe: TFEClient, org: str) -> None:
    ws = tfe.workspaces.create(org, WorkspaceCreateOptions(name=tfe_api.unique_name("cv")))
    options = ConfigurationVersionCreateOptions(auto_queue_runs=False)
    cv = tfe.configuration_versions.create(ws.id, options)
    assert cv.upload_url
    bad = targz([file("main.tf"), file("../escape.tf")])
    with pytest.raises(TFEError, match="422"):
        tfe.configuration_versions.upload_tar_gzip(cv.upload_url, io.BytesIO(bad))
    read = tfe.configuration_versions.read(cv.id)
    assert read.status == ConfigurationStatus.ERRORED
    assert read.error_message and "'..' component" in read.error_message
    with pytest.raises(TFEError):
        tfe.configuration_versions.download(cv.id)
