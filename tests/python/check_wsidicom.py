#!/usr/bin/env python3
"""Check a synthetic slide written by `slidemesh-tools synth` with independent readers.

wsidicom (which reads through pydicom and decodes tiles with Pillow) must open the slide,
see the pyramid the generator says it wrote, and decode pixels that match the generator's
reference pixels (`slidemesh-tools dump-region`) within JPEG tolerance. The label,
overview and thumbnail must be readable and not flat.

wsidicom does not support frames split over several fragments: with an empty Basic Offset
Table it refuses them, and with a Basic Offset Table it silently returns corrupt frames
(the inner item header ends up inside the JPEG stream). For such slides the pixels are
read with pydicom's encapsulation support (which follows the offset table across
fragments) and decoded with Pillow; wsidicom still checks structure and metadata.

With `--dicomweb URL` the slide is opened through a DICOMweb server instead of from files
(wsidicom's web client: QIDO-RS to find the instances, WADO-RS metadata and frames), and
dicomweb-client's searches must find it; the per-file checks are skipped.

Usage:
    slidemesh-tools synth --out DIR --seed 7 --size 4MB --json > slide.json
    check_wsidicom.py --tools path/to/slidemesh-tools --manifest slide.json DIR
    check_wsidicom.py --tools ... --manifest slide.json --dicomweb http://127.0.0.1:8080/dicomweb

Exits 0 when every check passes, 1 with one line per failed check otherwise, 2 when the
environment is unusable (missing module, bad arguments).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.encaps import generate_frames
    from wsidicom import WsiDicom
except ImportError as err:  # pragma: no cover - environment problem, not a slide problem
    print(
        f"check_wsidicom: missing python module ({err}); install with: "
        "python3 -m venv /tmp/wsivenv && /tmp/wsivenv/bin/pip install wsidicom pillow numpy",
        file=sys.stderr,
    )
    sys.exit(2)

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
LEVEL0_MPP = 0.25


class Checks:
    """Collects failures so one run reports every problem, not just the first."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def expect(self, ok: bool, message: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failures.append(message)
        return ok


def reference(tools: Path, spec: dict, downsample: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The generator's pixels for a region, before JPEG."""
    with tempfile.NamedTemporaryFile(suffix=".rgb") as out:
        subprocess.run(
            [
                str(tools), "dump-region",
                "--seed", str(spec["seed"]),
                "--width", str(spec["width"]),
                "--height", str(spec["height"]),
                "--downsample", str(downsample),
                "--x", str(x), "--y", str(y), "--w", str(w), "--h", str(h),
                "--out", out.name,
            ],
            check=True,
        )
        data = np.fromfile(out.name, dtype=np.uint8)
    return data.reshape(h, w, 3)


def decode_frames_pydicom(path: Path) -> tuple[pydicom.Dataset, list[np.ndarray]]:
    """Every frame of an instance, joined across fragments by pydicom, decoded by Pillow."""
    ds = pydicom.dcmread(path)
    frames_n = int(ds.NumberOfFrames)
    extended = None
    if "ExtendedOffsetTable" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    frames = []
    for frame in generate_frames(ds.PixelData, number_of_frames=frames_n, extended_offsets=extended):
        frames.append(np.asarray(Image.open(io.BytesIO(frame)).convert("RGB")))
    return ds, frames


def region_from_frames(ds: pydicom.Dataset, frames: list[np.ndarray], x: int, y: int, w: int, h: int) -> np.ndarray:
    """Cut a region out of a TILED_FULL instance's decoded frames."""
    tw, th = int(ds.Columns), int(ds.Rows)
    across = -(-int(ds.TotalPixelMatrixColumns) // tw)
    out = np.zeros((h, w, 3), dtype=np.uint8)
    for ty in range(y // th, (y + h - 1) // th + 1):
        for tx in range(x // tw, (x + w - 1) // tw + 1):
            tile = frames[ty * across + tx]
            x0, y0 = max(x, tx * tw), max(y, ty * th)
            x1, y1 = min(x + w, (tx + 1) * tw), min(y + h, (ty + 1) * th)
            out[y0 - y:y1 - y, x0 - x:x1 - x] = tile[y0 - ty * th:y1 - ty * th, x0 - tx * tw:x1 - tx * tw]
    return out


def compare(checks: Checks, name: str, got: np.ndarray, want: np.ndarray, max_mad: float, min_std: float) -> None:
    if not checks.expect(got.shape == want.shape, f"{name}: decoded shape {got.shape}, expected {want.shape}"):
        return
    mad = np.abs(got.astype(np.float64) - want.astype(np.float64)).mean(axis=(0, 1))
    print(f"  {name}: mean abs diff per channel {np.round(mad, 2).tolist()}, "
          f"reference std {want.std():.1f}, decoded std {got.std():.1f}")
    checks.expect(
        bool((mad < max_mad).all()),
        f"{name}: mean absolute difference {np.round(mad, 2).tolist()} exceeds {max_mad} "
        "(colours or tile placement wrong?)",
    )
    checks.expect(want.std() > min_std, f"{name}: reference region is flat (std {want.std():.1f} <= {min_std})")
    checks.expect(got.std() > min_std, f"{name}: decoded region is flat (std {got.std():.1f} <= {min_std})")


def check_files(checks: Checks, manifest: dict, slide_dir: Path) -> dict[str, pydicom.Dataset]:
    """Per-file DICOM checks with pydicom: identity, encoding and offset tables."""
    spec = manifest["spec"]
    datasets = {}
    for inst in manifest["instances"]:
        path = slide_dir / Path(inst["path"]).name
        if not checks.expect(path.is_file(), f"{path}: listed in the manifest but missing"):
            continue
        ds = pydicom.dcmread(path)
        datasets[path.name] = ds
        name = path.name
        checks.expect(ds.file_meta.TransferSyntaxUID == JPEG_BASELINE, f"{name}: transfer syntax {ds.file_meta.TransferSyntaxUID}")
        checks.expect(ds.SOPClassUID == WSI_SOP_CLASS, f"{name}: SOP class {ds.SOPClassUID}")
        checks.expect(ds.SOPInstanceUID == inst["sop_instance_uid"], f"{name}: SOP instance UID differs from manifest")
        checks.expect(ds.SeriesInstanceUID == manifest["series_uid"], f"{name}: series UID differs")
        checks.expect(ds.StudyInstanceUID == manifest["study_uid"], f"{name}: study UID differs")
        checks.expect(ds.FrameOfReferenceUID == manifest["frame_of_reference_uid"], f"{name}: frame of reference differs")
        checks.expect(ds.PatientID == manifest["patient_id"], f"{name}: patient id differs")
        checks.expect(ds.PhotometricInterpretation == "YBR_FULL_422", f"{name}: photometric {ds.PhotometricInterpretation}")
        checks.expect(int(ds.NumberOfFrames) == inst["frames"], f"{name}: NumberOfFrames {ds.NumberOfFrames} != {inst['frames']}")
        checks.expect(int(ds.TotalPixelMatrixColumns) == inst["width"], f"{name}: TotalPixelMatrixColumns")
        checks.expect(int(ds.TotalPixelMatrixRows) == inst["height"], f"{name}: TotalPixelMatrixRows")
        checks.expect(ds.DimensionOrganizationType == "TILED_FULL", f"{name}: not TILED_FULL")
        flavor = inst["flavor"].upper()
        checks.expect(ds.ImageType[2] == flavor, f"{name}: ImageType {list(ds.ImageType)}, expected {flavor}")
        # Offset tables as requested.
        has_eot = "ExtendedOffsetTable" in ds
        checks.expect(has_eot == (spec["offset_table"] == "extended"), f"{name}: extended offset table present={has_eot}")
        bot = pydicom.encaps.parse_basic_offsets(ds.PixelData)
        checks.expect(
            (len(bot) == inst["frames"]) == (spec["offset_table"] == "basic"),
            f"{name}: basic offset table has {len(bot)} entries for {inst['frames']} frames "
            f"with offset table '{spec['offset_table']}'",
        )
        # parse_fragments counts items from where the buffer stands: skip the BOT item.
        buffer = io.BytesIO(ds.PixelData)
        pydicom.encaps.parse_basic_offsets(buffer)
        fragments, _ = pydicom.encaps.parse_fragments(buffer)
        expected = inst["frames"] * spec["fragments_per_frame"]
        checks.expect(fragments == expected, f"{name}: {fragments} fragments, expected {expected}")
    return datasets


def check_searches(checks: Checks, manifest: dict, url: str) -> None:
    """QIDO-RS through dicomweb-client (an independent client): the slide's study, series
    and instances are found by the usual matching, and non-matching queries find nothing."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url)
    study, series = manifest["study_uid"], manifest["series_uid"]
    count = len(manifest["instances"])

    def uids(results: list, tag: str) -> set:
        return {r[tag]["Value"][0] for r in results if tag in r and "Value" in r[tag]}

    studies = client.search_for_studies(search_filters={"PatientID": manifest["patient_id"]})
    checks.expect(uids(studies, "0020000D") == {study}, f"QIDO studies by PatientID: {uids(studies, '0020000D')}")
    if studies:
        got = studies[0].get("00201208", {}).get("Value", [None])[0]
        checks.expect(got is not None and int(got) >= count, f"NumberOfStudyRelatedInstances {got}, expected >= {count}")
    wildcard = client.search_for_studies(search_filters={"AccessionNumber": manifest["accession_number"][:4] + "*"})
    checks.expect(study in uids(wildcard, "0020000D"), "QIDO wildcard on AccessionNumber misses the study")
    none = client.search_for_studies(search_filters={"PatientID": "no-such-patient"})
    checks.expect(none == [], f"QIDO for an unknown patient found {len(none)} studies")
    dated = client.search_for_studies(search_filters={"StudyDate": "19000101-20991231"})
    checks.expect(study in uids(dated, "0020000D"), "QIDO date range misses the study")
    later = client.search_for_studies(search_filters={"StudyDate": "20990101-"})
    checks.expect(study not in uids(later, "0020000D"), "QIDO open date range matched a past study")
    series_found = client.search_for_series(study, search_filters={"Modality": "SM"})
    checks.expect(uids(series_found, "0020000E") == {series}, f"QIDO series in study: {uids(series_found, '0020000E')}")
    instances = client.search_for_instances(study, series, fields=["AvailableTransferSyntaxUID"])
    checks.expect(len(instances) == count, f"QIDO found {len(instances)} instances, expected {count}")
    syntaxes = {v for r in instances for v in r.get("00083002", {}).get("Value", [])}
    checks.expect(syntaxes == {JPEG_BASELINE}, f"AvailableTransferSyntaxUID {syntaxes}")
    page = client.search_for_instances(study, series, limit=3, offset=2)
    checks.expect(len(page) == min(3, max(0, count - 2)), f"limit=3 offset=2 gave {len(page)} instances")
    every = client.search_for_instances(study, series, get_remaining=True, limit=2)
    checks.expect(len(every) == count, f"paging through instances 2 at a time gave {len(every)}")
    print(f"  QIDO-RS via dicomweb-client: study, series, {len(instances)} instances found; filters and paging hold")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slide_dir", type=Path, nargs="?", help="directory holding one generated slide")
    parser.add_argument("--dicomweb", help="read the slide through this DICOMweb base URL instead of files")
    parser.add_argument("--tools", type=Path, required=True, help="path to the slidemesh-tools binary")
    parser.add_argument("--manifest", type=Path, required=True, help="JSON printed by `slidemesh-tools synth --json`")
    # JPEG q80 with 4:2:0 chroma measures 4-6 at level 0 and 5-7.5 at level 2 on this
    # texture (Pillow's own encoder gives the same); a one-pixel shift gives 10-15 and a
    # YCbCr/RGB mix-up about 40, so 9 separates them with margin on both sides.
    parser.add_argument("--max-mad", type=float, default=9.0, help="JPEG tolerance: mean abs diff per channel")
    parser.add_argument("--min-std", type=float, default=12.0, help="a checked region must vary at least this much")
    args = parser.parse_args()

    if not args.tools.is_file():
        print(f"check_wsidicom: {args.tools} not found; build it with: cargo build -p slidemesh-tools", file=sys.stderr)
        return 2
    manifest = json.loads(args.manifest.read_text().strip().splitlines()[0])
    spec = manifest["spec"]
    fragmented = spec["fragments_per_frame"] > 1
    checks = Checks()
    print(f"checking {args.dicomweb or args.slide_dir} (seed {spec['seed']}, {spec['width']}x{spec['height']}, "
          f"offset table {spec['offset_table']}, {spec['fragments_per_frame']} fragment(s) per frame)")

    if args.dicomweb:
        check_searches(checks, manifest, args.dicomweb)
        from wsidicom import WsiDicomWebClient
        client = WsiDicomWebClient.create_client(args.dicomweb)
        wsi = WsiDicom.open_web(client, manifest["study_uid"], manifest["series_uid"])
    elif args.slide_dir is None:
        parser.error("give a slide directory or --dicomweb URL")
    else:
        check_files(checks, manifest, args.slide_dir)
        wsi = WsiDicom.open(args.slide_dir)
    levels = manifest["levels"]
    checks.expect(len(wsi.levels) == len(levels), f"wsidicom sees {len(wsi.levels)} levels, generator wrote {len(levels)}")
    for level, want in zip(wsi.levels, levels):
        got = (level.size.width, level.size.height)
        checks.expect(got == (want["width"], want["height"]), f"level {want['level']}: size {got}, expected {(want['width'], want['height'])}")
        checks.expect((level.tile_size.width, level.tile_size.height) == (spec["tile_size"],) * 2, f"level {want['level']}: tile size {level.tile_size}")
        checks.expect(abs(level.mpp.width - LEVEL0_MPP * want["downsample"]) < 1e-6, f"level {want['level']}: mpp {level.mpp}")
    meta = wsi.metadata
    checks.expect(meta.patient.identifier == manifest["patient_id"], f"wsidicom patient id {meta.patient.identifier}")
    checks.expect(meta.study.accession_number == manifest["accession_number"], "wsidicom accession number differs")
    stains = {s.meaning for staining in meta.slide.stainings for s in staining.substances}
    checks.expect(stains == {"hematoxylin stain", "water soluble eosin stain"}, f"wsidicom stainings {stains}")

    # Pixels of level 0 and a lower level: a region around the centre, crossing tiles.
    lower = min(2, len(levels) - 1)
    for index in sorted({0, lower}):
        lv = levels[index]
        w, h = min(512, lv["width"]), min(512, lv["height"])
        x, y = (lv["width"] - w) // 2, (lv["height"] - h) // 2
        want = reference(args.tools, spec, lv["downsample"], x, y, w, h)
        if fragmented:
            ds, frames = decode_frames_pydicom(args.slide_dir / f"level-{index}.dcm")
            got = region_from_frames(ds, frames, x, y, w, h)
            source = "pydicom+Pillow"
        else:
            got = np.asarray(wsi.read_region((x, y), lv["level"], (w, h)))
            source = "wsidicom"
        compare(checks, f"level {index} region {w}x{h} at ({x},{y}) via {source}", got, want, args.max_mad, args.min_std)

    # Associated images.
    thumb_inst = next(i for i in manifest["instances"] if i["flavor"] == "thumbnail")
    d = manifest["thumbnail_downsample"]
    tw, th = thumb_inst["width"], thumb_inst["height"]
    if fragmented:
        _, label = decode_frames_pydicom(args.slide_dir / "label.dcm")
        _, overview = decode_frames_pydicom(args.slide_dir / "overview.dcm")
        _, thumb = decode_frames_pydicom(args.slide_dir / "thumbnail.dcm")
        label, overview, thumb = label[0], overview[0], thumb[0][:th, :tw]
    else:
        label = np.asarray(wsi.read_label())
        overview = np.asarray(wsi.read_overview())
        thumb = np.asarray(wsi.read_thumbnail((tw, th)))
    checks.expect(label.shape == (512, 512, 3), f"label shape {label.shape}")
    checks.expect(label.std() > 30, f"label is flat (std {label.std():.1f}): expected text and a code")
    checks.expect(overview.shape == (512, 1536, 3), f"overview shape {overview.shape}")
    checks.expect(overview.std() > 10, f"overview is flat (std {overview.std():.1f})")
    print(f"  label {label.shape[1]}x{label.shape[0]} std {label.std():.1f}, overview {overview.shape[1]}x{overview.shape[0]} std {overview.std():.1f}")
    compare(checks, f"thumbnail {tw}x{th} (downsample {d})", thumb, reference(args.tools, spec, d, 0, 0, tw, th), args.max_mad, args.min_std)
    wsi.close()

    if checks.failures:
        print(f"FAILED {len(checks.failures)} of {len(checks.failures) + checks.passed} checks for {args.dicomweb or args.slide_dir}:", file=sys.stderr)
        for failure in checks.failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print(f"ok: {checks.passed} checks passed for {args.dicomweb or args.slide_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
