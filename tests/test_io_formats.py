"""Multichannel movies and microscope files (through bioio), with their calibration."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tifffile

from napari_cosine_tracker.core.cli import main
from napari_cosine_tracker.core.io import MovieError, read_movie
from napari_cosine_tracker.core.model import default_model_dir
from napari_cosine_tracker.core.synthetic import make_synthetic_movie

T, C, Y, X = 5, 2, 24, 32
DATA = np.arange(T * C * Y * X, dtype=np.uint16).reshape(T, C, Y, X)


def test_a_multichannel_tiff_needs_a_channel_and_reads_it_lazily(tmp_path):
    tifffile.imwrite(tmp_path / "h.tif", DATA, imagej=True, metadata={"axes": "TCYX"})
    with pytest.raises(MovieError, match=r"2 channels \(0-1\); choose the one to track with --channel"):
        read_movie(tmp_path / "h.tif")
    with pytest.raises(MovieError, match="no channel 2"):
        read_movie(tmp_path / "h.tif", channel=2)
    movie = read_movie(tmp_path / "h.tif", channel=1)
    assert movie.shape == (T, Y, X) and movie.channel == 1
    np.testing.assert_array_equal(movie[3], DATA[3, 1])
    np.testing.assert_array_equal(np.asarray(movie), DATA[:, 1])
    # a single-channel movie has only channel 0
    tifffile.imwrite(tmp_path / "s.tif", DATA[:, 0])
    assert read_movie(tmp_path / "s.tif", channel=0).shape == (T, Y, X)
    with pytest.raises(MovieError, match="no channel 1"):
        read_movie(tmp_path / "s.tif", channel=1)


def test_ome_tiff_channel_names_pixel_size_and_frame_interval(tmp_path):
    path = tmp_path / "m.ome.tif"
    tifffile.imwrite(path, DATA, metadata={
        "axes": "TCYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3, "TimeIncrement": 120,
        "TimeIncrementUnit": "s", "Channel": {"Name": ["dapi", "gfp"]}})
    with pytest.raises(MovieError, match="0: dapi, 1: gfp"):
        read_movie(path)
    movie = read_movie(path, channel=0)
    np.testing.assert_array_equal(movie[2], DATA[2, 0])
    assert movie.pixel_size == (0.3, 0.3) and movie.frame_interval == 2.0  # minutes
    assert movie.channel_names == ["dapi", "gfp"]


def test_ome_zarr_through_bioio(tmp_path):
    from bioio_ome_zarr.writers import OMEZarrWriter

    path = tmp_path / "m.ome.zarr"
    w = OMEZarrWriter(path, level_shapes=DATA.shape, dtype=DATA.dtype,
                      axes_names=["t", "c", "y", "x"], axes_types=["time", "channel", "space", "space"],
                      axes_units=["minute", None, "micrometer", "micrometer"],
                      physical_pixel_size=[3.0, 1.0, 0.25, 0.25])
    w.write_full_volume(DATA)
    movie = read_movie(path, channel=1)
    np.testing.assert_array_equal(movie[4], DATA[4, 1])
    assert movie.pixel_size == (0.25, 0.25) and movie.frame_interval == 3.0


def test_zeiss_czi_through_bioio(tmp_path):
    """A CZI written by Zeiss's own library (libCZI, through pylibCZIrw) opens through
    bioio-czi: the channels by name, the chosen one frame by frame, the pixel size in µm."""
    from pylibCZIrw import czi as pyczi

    path = tmp_path / "m.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as f:
        for t in range(DATA.shape[0]):
            for c in range(DATA.shape[1]):
                f.write(DATA[t, c][..., None], plane={"T": t, "C": c, "Z": 0})
        f.write_metadata(document_name="m", channel_names={0: "dapi", 1: "gfp"},
                         scale_x=0.3e-6, scale_y=0.3e-6)
    with pytest.raises(MovieError, match="dapi.*gfp"):
        read_movie(path)
    movie = read_movie(path, channel=1)
    assert movie.shape == (DATA.shape[0],) + DATA.shape[2:]
    np.testing.assert_array_equal(movie[3], DATA[3, 1])
    assert movie.pixel_size == pytest.approx((0.3, 0.3))


def _write_lif(path, data, pixel_size_um, frame_interval_s, lut_names):
    """Write ``data`` (T, C, Y, X; unsigned ints) as a minimal Leica LIF (version 2).

    No library writes LIF, so this follows the layout Leica's readers parse (liffile, which
    bioio-lif uses, and readlif): a 0x70 / byte count / 0x2A / UTF-16 length header and the
    UTF-16 XML description, then one 0x70 ... 0x2A memory block per element (64-bit sizes
    in version 2) named by the MemoryBlockID its element's <Memory> gives. As in files from
    LAS X, the top element (the project) has an empty block and the image is its child;
    planes are stored X fastest, then Y, then channel (ChannelDescription BytesInc), then T
    (DimID 1, 2, 4), and Length spans the first to the last pixel centre, in metres.
    """
    t, c, y, x = data.shape
    isz = data.dtype.itemsize

    def dim(dim_id, n, length, unit, bytes_inc):
        return (f'<DimensionDescription DimID="{dim_id}" NumberOfElements="{n}" Origin="0" '
                f'Length="{length!r}" Unit="{unit}" BitInc="0" BytesInc="{bytes_inc}"/>')

    channels = "".join(
        f'<ChannelDescription DataType="0" ChannelTag="0" Resolution="{8 * isz}" '
        f'NameOfMeasuredQuantity="" Min="0" Max="{np.iinfo(data.dtype).max}" Unit="" '
        f'LUTName="{name}" IsLUTInverted="0" BytesInc="{k * y * x * isz}" BitInc="0"/>'
        for k, name in enumerate(lut_names))
    dims = (dim(1, x, (x - 1) * pixel_size_um * 1e-6, "m", isz)
            + dim(2, y, (y - 1) * pixel_size_um * 1e-6, "m", x * isz)
            + dim(4, t, (t - 1) * frame_interval_s, "s", c * y * x * isz))
    xml = ('<LMSDataContainerHeader Version="2"><Element Name="project"><Data><Experiment/></Data>'
           '<Memory Size="0" MemoryBlockID="MemBlock_0"/><Children><Element Name="movie"><Data>'
           f'<Image><ImageDescription><Channels>{channels}</Channels><Dimensions>{dims}'
           '</Dimensions></ImageDescription></Image></Data>'
           f'<Memory Size="{data.nbytes}" MemoryBlockID="MemBlock_1"/><Children/></Element>'
           '</Children></Element></LMSDataContainerHeader>')
    blocks = {"MemBlock_0": b"", "MemBlock_1": data.astype(data.dtype.newbyteorder("<")).tobytes()}
    with open(path, "wb") as f:
        f.write(struct.pack("<IIBI", 0x70, 2 * len(xml) + 5, 0x2A, len(xml)))
        f.write(xml.encode("utf-16-le"))
        for block_id, payload in blocks.items():
            ident = block_id.encode("utf-16-le")
            f.write(struct.pack("<IIBQBI", 0x70, 14 + len(ident), 0x2A, len(payload), 0x2A,
                                len(block_id)))
            f.write(ident + payload)


def test_leica_lif_through_bioio(tmp_path):
    """A LIF laid out as Leica's software writes it (see _write_lif) opens through bioio-lif:
    the channels by their LUT names, the chosen one frame by frame, the pixel size in µm and
    the time between frames."""
    data = np.arange(3 * 2 * 32 * 40, dtype=np.uint16).reshape(3, 2, 32, 40)
    path = tmp_path / "m.lif"
    _write_lif(path, data, pixel_size_um=0.3, frame_interval_s=90.0, lut_names=["Blue", "Green"])
    with pytest.raises(MovieError, match="0: Blue, 1: Green"):
        read_movie(path)
    movie = read_movie(path, channel=1)
    assert movie.shape == (3, 32, 40) and movie.dtype == np.uint16
    assert movie.channel == 1 and movie.channel_names == ["Blue", "Green"]
    for t in range(3):
        np.testing.assert_array_equal(movie[t], data[t, 1])
    np.testing.assert_array_equal(read_movie(path, channel=0)[2], data[2, 0])
    assert movie.pixel_size == pytest.approx((0.3, 0.3))
    assert movie.frame_interval == pytest.approx(1.5)  # minutes: 90 s between frames


def test_3d_and_unreadable_microscope_files_are_refused_clearly(tmp_path):
    tifffile.imwrite(tmp_path / "z.ome.tif", np.zeros((3, 4, Y, X), np.uint16),
                     metadata={"axes": "TZYX"})
    with pytest.raises(MovieError, match="3-D movie"):
        read_movie(tmp_path / "z.ome.tif")
    (tmp_path / "bad.nd2").write_bytes(b"not an nd2 file")
    with pytest.raises(MovieError, match="bad.nd2"):
        read_movie(tmp_path / "bad.nd2")


@pytest.mark.skipif(not (default_model_dir() / "weights.safetensors").is_file(),
                    reason="the packaged model is not in this checkout")
def test_track_a_channel_of_a_multichannel_movie(tmp_path, capsys):
    sample = make_synthetic_movie(n_frames=4, shape=(96, 96), n_cells=4, seed=2)
    noise = np.random.default_rng(0).integers(0, 50, sample.images.shape).astype(np.uint16)
    both = np.stack([noise, sample.images.astype(np.uint16)], axis=1)  # nuclei in channel 1
    tifffile.imwrite(tmp_path / "two.tif", both, imagej=True, metadata={"axes": "TCYX"})
    assert main(["track", str(tmp_path / "two.tif"), "-o", str(tmp_path / "RES"),
                 "--scale", "1.5"]) == 2
    assert "--channel" in capsys.readouterr().err
    assert main(["track", str(tmp_path / "two.tif"), "-o", str(tmp_path / "RES"),
                 "--channel", "1", "--scale", "1.5", "--quiet"]) == 0
    assert "tracks" in capsys.readouterr().out
    assert len(list((tmp_path / "RES").glob("mask*.tif"))) == 4


def test_napari_reader_opens_one_layer_per_channel_on_the_files_scale(tmp_path):
    from napari_cosine_tracker.plugin.reader import napari_get_reader

    path = tmp_path / "m.ome.tif"
    tifffile.imwrite(path, DATA, metadata={
        "axes": "TCYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "TimeIncrement": 5,
        "TimeIncrementUnit": "min", "Channel": {"Name": ["dapi", "gfp"]}})
    layers = napari_get_reader(str(path))(str(path))
    assert [meta["name"] for _, meta, _ in layers] == ["m [dapi]", "m [gfp]"]
    for c, (movie, meta, kind) in enumerate(layers):
        assert kind == "image" and meta["scale"] == (5.0, 0.5, 0.5)
        np.testing.assert_array_equal(movie[1], DATA[1, c])
    tifffile.imwrite(tmp_path / "plain.tif", DATA, imagej=True, metadata={"axes": "TCYX"})
    layers = napari_get_reader(str(tmp_path / "plain.tif"))(str(tmp_path / "plain.tif"))
    assert [meta["name"] for _, meta, _ in layers] == ["plain [channel 0]", "plain [channel 1]"]
    assert "scale" not in layers[0][1]
