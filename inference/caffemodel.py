"""A deploy prototxt and its weights, checked before Caffe sees them (for ``inference.net.SRNet``).

Caffe aborts the whole process (glog FATAL, no exception) on a prototxt that does not parse, a
corrupt caffemodel or a layer whose blobs differ in number or shape, so those become a one-line
``DataError`` here instead.
"""
import warnings
from pathlib import Path

import numpy as np
from caffe.proto import caffe_pb2
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from core.errors import DataError


def check_deploy(path):
    """(path, NetParameter) of the deploy prototxt, after checking it exists, parses and is a
    deploy net: one input, no data layer (Caffe would abort)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: deploy prototxt not found")
    proto = caffe_pb2.NetParameter()
    try:
        text_format.Parse(path.read_text(), proto)
    except (text_format.ParseError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a Caffe prototxt ({err})") from None
    inputs = [layer for layer in proto.layer if layer.type == "Input"] or list(proto.input)
    readers = [layer.name for layer in proto.layer if layer.type.endswith("Data")]
    if len(inputs) != 1 or readers:  # Caffe would abort on a data layer's missing files
        raise DataError(f"{path}: not a deploy net (it needs one Input layer and no data layers; "
                        "a run's deploy net is its deploy.prototxt, not train_val.prototxt)")
    return path, proto


def read_caffemodel(path):
    """The caffemodel as a NetParameter; DataError if it is missing or does not parse."""
    return read_binary_proto(path, caffe_pb2.NetParameter(), "caffemodel", "Caffe model")


def read_binary_proto(path, message, kind, what):
    """``message`` filled from the binary protobuf file ``path``; DataError naming the file when
    it is missing ("<kind> not found") or does not parse whole ("not a <what>")."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {kind} not found")
    data = path.read_bytes()
    try:
        # The C++ protobuf backend may stop early on garbage with only a RuntimeWarning and
        # return how many bytes it consumed: a short count means corrupt too.
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            consumed = message.ParseFromString(data)
    except (DecodeError, UnicodeDecodeError, ValueError, SystemError):
        consumed = None
    if consumed is not None and consumed != len(data):
        consumed = None
    if consumed is None:
        raise DataError(f"{path}: not a {what} (cannot parse it)")
    return message


LEGACY_FIELDS = ("num", "channels", "height", "width")


def _is_legacy(blob):
    """True for a BlobProto with the old 4-D fields, as Caffe's Blob::FromProto decides."""
    return any(blob.HasField(f) for f in LEGACY_FIELDS)


def _proto_shape(blob):
    """A BlobProto's shape: its ``shape``; the 4-D legacy fields (num, channels, height, width)
    where it has those; else none at all, a 0-d blob (PReLU's one shared slope)."""
    if blob.HasField("shape") or not _is_legacy(blob):
        return tuple(blob.shape.dim)
    return tuple(getattr(blob, f) for f in LEGACY_FIELDS)


def _legacy4(shape):
    """Shape padded to 4-D with leading 1s, as Caffe compares legacy blobs."""
    return (1,) * (4 - len(shape)) + tuple(shape)


def _same_shape(proto_shape, net_shape, legacy):
    if legacy:
        return _legacy4(proto_shape) == _legacy4(net_shape)
    return tuple(proto_shape) == tuple(net_shape)


def check_caffemodel(net, model, path):
    """DataError unless the caffemodel fills every parameter of ``net`` with blobs of its shapes.

    Mirrors Caffe's CopyTrainedLayersFrom: layers match by name and extra model layers are
    ignored (snapshots of the train_val net have data and loss layers); V1 (``layers``) models
    are covered too. A net layer with parameters but no weights in the model is an error here,
    where Caffe would silently keep its random initial weights.
    """
    sources = {layer.name: layer for layer in list(model.layer) + list(model.layers)}
    for name, layer in net.layer_dict.items():
        wanted = [tuple(b.data.shape) for b in layer.blobs]
        source = sources.get(name)
        if source is None:
            if wanted:
                raise DataError(f"{path}: no weights for layer {name!r} of the deploy net "
                                "(not a model of this net?)")
            continue
        legacy = [not b.HasField("shape") and _is_legacy(b) for b in source.blobs]
        found = [_proto_shape(b) for b in source.blobs]
        if len(found) != len(wanted) or not all(
                _same_shape(f, w, lg) for f, w, lg in zip(found, wanted, legacy)):
            raise DataError(f"{path}: layer {name!r} has blobs {found}, the deploy net wants "
                            f"{wanted} (prototxt and caffemodel do not match)")


def _blob_array(value):
    """A parameter as an array: an ndarray, or a pycaffe Blob (as in solver.net.params)."""
    return np.asarray(value.data if hasattr(value, "diff") else value)


def copy_params(net, params, complete):
    """Copy ``{layer: [arrays]}`` into ``net.params``; DataError on unknown layers or shapes."""
    for name, arrays in params.items():
        if name not in net.params:
            raise DataError(f"params: the deploy net has no parameter layer {name!r}")
        arrays = [_blob_array(a) for a in arrays]
        wanted = [tuple(b.data.shape) for b in net.params[name]]
        found = [a.shape for a in arrays]
        if found != wanted:
            raise DataError(f"params: layer {name!r} has blobs {found}, the net wants {wanted}")
        for blob, array in zip(net.params[name], arrays):
            blob.data[...] = array
    missing = [name for name in net.params if name not in params]
    if complete and missing:
        raise DataError(f"params: no weights for layer(s) {', '.join(missing)}")
