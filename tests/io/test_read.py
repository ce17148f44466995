"""What reading records about its sources."""

from __future__ import annotations

from stac2cube.io.read import href_without_credentials


def test_signed_hrefs_are_recorded_without_their_credentials() -> None:
    sas = (
        "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/33/T/WN/B04.tif"
        "?st=2026-12-01T10%3A00Z&se=2026-12-02T11%3A00Z&sp=rl&sv=2024-05-04&sr=c"
        "&skoid=abc&sktid=def&skt=x&ske=y&sks=b&skv=2024-05-04&sig=SECRET%3D"
    )
    assert href_without_credentials(sas) == (
        "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/33/T/WN/B04.tif"
    )
    s3 = "https://b.s3.amazonaws.com/B04.tif?X-Amz-Signature=abc&X-Amz-Credential=k&v=2"
    assert href_without_credentials(s3) == "https://b.s3.amazonaws.com/B04.tif?v=2"
    for plain in ("./B04.tif", "s3://bucket/B04.tif", "https://host/B04.tif?version=3"):
        assert href_without_credentials(plain) == plain
