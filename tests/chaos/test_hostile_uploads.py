"""A corpus of hostile uploads: every one is refused with a 4xx problem, and the service
stays healthy afterwards.

Decompression bombs, truncated and mislabelled files, lying Content-Length headers and,
for dataset imports, zips with traversal paths, symlinks and bomb members.
"""

from __future__ import annotations

import io
import socket
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cli.stack import Stack
from tests.conftest import FIXTURES, wait_for_job
from tests.factories import MODEL

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GOOD_PNG = FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.png"
GOOD_JPEG = FIXTURES / "pneumoniamnist" / "test_0001_normal.jpg"
GOOD_DICOM = FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height 8-bit gray pixels, all zero, deflated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    idat = b"".join(compressor.compress(row) for _ in range(min(height, 64)))
    idat += compressor.flush()
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def dicom_without_pixels() -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Modality = "CR"
    ds.Rows, ds.Columns = 512, 512
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


IMAGE_CORPUS: dict[str, Callable[[], tuple[bytes, str]]] = {
    "png bomb: 200k x 200k pixels": lambda: (png_bomb(200_000, 200_000), "image/png"),
    "png bomb: 1 x 2^31 pixels": lambda: (png_bomb(1, 2**31 - 1), "image/png"),
    "png truncated inside its header": lambda: (GOOD_PNG.read_bytes()[:20], "image/png"),
    "png signature only": lambda: (PNG_SIGNATURE, "image/png"),
    "jpeg truncated before its frame header": lambda: (GOOD_JPEG.read_bytes()[:40], "image/jpeg"),
    "dicom truncated in its meta header": lambda: (GOOD_DICOM.read_bytes()[:200], "application/dicom"),  # noqa: E501
    "dicom without pixel data": lambda: (dicom_without_pixels(), "application/dicom"),
    "empty file": lambda: (b"", "image/png"),
    "text labelled as png": lambda: (b"hello, I am not an image\n" * 10, "image/png"),
    "pdf": lambda: (b"%PDF-1.7\n1 0 obj <<>> endobj\n%%EOF\n", "application/pdf"),
    "elf executable labelled as jpeg": lambda: (b"\x7fELF\x02\x01\x01" + b"\0" * 200, "image/jpeg"),
    "html with script": lambda: (b"<html><script>alert(1)</script></html>", "text/html"),
}  # fmt: skip


def _assert_problem_4xx(response: httpx.Response, what: str) -> None:
    assert 400 <= response.status_code < 500, f"{what}: {response.status_code} {response.text}"
    assert response.headers["content-type"] == "application/problem+json", what
    body = response.json()
    assert body["status"] == response.status_code and body["detail"], what
    assert "Traceback" not in response.text, what


@pytest.mark.parametrize("name", list(IMAGE_CORPUS))
def test_hostile_image_is_refused_with_a_4xx_problem(api: httpx.Client, name: str) -> None:
    data, content_type = IMAGE_CORPUS[name]()
    response = api.post(
        "/v1/jobs", data={"model": MODEL}, files=[("files", ("upload.png", data, content_type))]
    )
    print(f"{name}: {response.status_code} {response.json().get('type', '')}")
    _assert_problem_4xx(response, name)


def test_hostile_file_names_and_counts_are_refused(api: httpx.Client) -> None:
    png = GOOD_PNG.read_bytes()
    too_many = [("files", (f"{i}.png", png, "image/png")) for i in range(65)]
    _assert_problem_4xx(api.post("/v1/jobs", data={"model": MODEL}, files=too_many), "65 files")
    no_files = api.post("/v1/jobs", data={"model": MODEL})
    _assert_problem_4xx(no_files, "no files")


def _raw_request(stack: Stack, head: str, body: bytes = b"") -> tuple[int, str]:
    url = urlparse(stack.api_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status_line, _, rest = data.decode(errors="replace").partition("\r\n")
    return int(status_line.split()[1]), rest


def test_huge_claimed_content_length_is_refused_before_reading(
    stack: Stack, make_key: Callable[..., str]
) -> None:
    key = make_key(scopes=("admin",))
    head = (
        "POST /v1/jobs HTTP/1.1\r\n"
        f"Host: {urlparse(stack.api_url).netloc}\r\n"
        f"Authorization: Bearer {key}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {10**12}\r\n"
        "Connection: close\r\n\r\n"
    )
    status, headers = _raw_request(stack, head, b"--x\r\n")
    assert status == 413, headers
    assert "application/problem+json" in headers.lower()


def _zip(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return out.getvalue()


def _symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: external_attr carries the file mode
    info.external_attr = 0o120777 << 16
    return info, target.encode()


ZIP_CORPUS: dict[str, Callable[[], bytes]] = {
    "traversal ../": lambda: _zip([("train/normal/../../../../evil.png", GOOD_PNG.read_bytes())]),
    "absolute path": lambda: _zip([("/etc/cron.d/evil.png", GOOD_PNG.read_bytes())]),
    "windows drive path": lambda: _zip([("C:\\evil\\x.png", GOOD_PNG.read_bytes())]),
    "symlink member": lambda: _zip([_symlink("train/normal/a.png", "/etc/passwd")]),
    "bomb member": lambda: _zip([("train/normal/a.png", b"\0" * (48 * 1024 * 1024))]),
    "truncated zip": lambda: _zip([("train/normal/a.png", GOOD_PNG.read_bytes())])[:60],
    "not a zip": lambda: GOOD_PNG.read_bytes(),
}  # fmt: skip


@pytest.fixture(scope="module")
def datasets_route(api: httpx.Client) -> str:
    paths = api.get("/openapi.json").json()["paths"]
    assert "/v1/datasets" in paths, "POST /v1/datasets is not registered"
    return "/v1/datasets"


@pytest.mark.parametrize("name", list(ZIP_CORPUS))
def test_hostile_dataset_zip_is_refused_with_a_4xx_problem(
    api: httpx.Client, datasets_route: str, name: str
) -> None:
    response = api.post(
        datasets_route,
        data={"name": "hostile"},
        files={"file": ("dataset.zip", ZIP_CORPUS[name](), "application/zip")},
    )
    print(f"zip {name}: {response.status_code} {response.json().get('type', '')}")
    _assert_problem_4xx(response, name)


def test_service_is_healthy_after_the_corpus(api: httpx.Client, stack: Stack) -> None:
    assert httpx.get(stack.api_url + "/readyz", timeout=10).status_code == 200
    response = api.post(
        "/v1/jobs",
        data={"model": MODEL},
        files=[("files", (GOOD_PNG.name, GOOD_PNG.read_bytes(), "image/png"))],
    )
    assert response.status_code == 202, response.text
    assert wait_for_job(api, response.json()["id"])["status"] == "succeeded"
    assert not list(Path(stack.env["MEDIMG_DATA_DIR"]).rglob("evil*"))  # nothing escaped
