"""The messages of Caffe's ``caffe.proto`` that prototxt and caffemodel files use.

Written from the upstream definition (BVLC/caffe 1.0 plus the later Clip and Swish layers) as a
small table, one line per field: ``name [@number] [*]type [=default]``, ``*`` marking a repeated
field.  Field numbers are given only where netspec reads or writes the binary wire format
(caffemodel files); the text format needs names, types and enum values alone.  Defaults are
Caffe's, so the converter can tell when netspec's default for the same field differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCALARS = ("string", "bytes", "float", "double", "int", "uint", "bool")

ENUMS: dict[str, dict[str, int]] = {
    "Phase": {"TRAIN": 0, "TEST": 1},
    "VarianceNorm": {"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2},
    "DimCheckMode": {"STRICT": 0, "PERMISSIVE": 1},
    "NormalizationMode": {"FULL": 0, "VALID": 1, "BATCH_SIZE": 2, "NONE": 3},
    "Engine": {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2},
    "DB": {"LEVELDB": 0, "LMDB": 1},
    "EltwiseOp": {"PROD": 0, "SUM": 1, "MAX": 2},
    "Norm": {"L1": 1, "L2": 2},
    "NormRegion": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1},
    "PoolMethod": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2},
    "RoundMode": {"CEIL": 0, "FLOOR": 1},
    "ReductionOp": {"SUM": 1, "ASUM": 2, "SUMSQ": 3, "MEAN": 4},
    "SnapshotFormat": {"HDF5": 0, "BINARYPROTO": 1},
    "SolverMode": {"CPU": 0, "GPU": 1},
    "SolverType": {"SGD": 0, "NESTEROV": 1, "ADAGRAD": 2, "RMSPROP": 3, "ADADELTA": 4, "ADAM": 5},
    "V1LayerType": {
        "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3,
        "CONTRASTIVE_LOSS": 37, "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6,
        "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7, "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "HDF5_DATA": 9,
        "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11, "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13,
        "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29, "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34,
        "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19, "SIGMOID_CROSS_ENTROPY_LOSS": 27,
        "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33, "TANH": 23,
        "WINDOW_DATA": 24, "THRESHOLD": 31,
    },
}

#: V1 ``layers { type: ENUM }`` -> the V2 type string (upgrade_proto.cpp's UpgradeV1LayerType)
V1_TYPES: dict[str, str] = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution", "DATA": "Data",
    "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

_FILLER = "FillerParameter"

_LAYER_PARAMS = """
    accuracy_param AccuracyParameter; argmax_param ArgMaxParameter; batch_norm_param BatchNormParameter
    bias_param BiasParameter; clip_param ClipParameter; concat_param ConcatParameter
    contrastive_loss_param ContrastiveLossParameter; convolution_param ConvolutionParameter
    crop_param CropParameter; data_param DataParameter; dropout_param DropoutParameter
    dummy_data_param DummyDataParameter; eltwise_param EltwiseParameter; elu_param ELUParameter
    embed_param EmbedParameter; exp_param ExpParameter; flatten_param FlattenParameter
    hdf5_data_param HDF5DataParameter; hdf5_output_param HDF5OutputParameter
    hinge_loss_param HingeLossParameter; image_data_param ImageDataParameter
    infogain_loss_param InfogainLossParameter; inner_product_param InnerProductParameter
    input_param InputParameter; log_param LogParameter; lrn_param LRNParameter
    memory_data_param MemoryDataParameter; mvn_param MVNParameter; parameter_param ParameterParameter
    pooling_param PoolingParameter; power_param PowerParameter; prelu_param PReLUParameter
    python_param PythonParameter; recurrent_param RecurrentParameter; reduction_param ReductionParameter
    relu_param ReLUParameter; reshape_param ReshapeParameter; scale_param ScaleParameter
    sigmoid_param SigmoidParameter; softmax_param SoftmaxParameter; spp_param SPPParameter
    slice_param SliceParameter; swish_param SwishParameter; tanh_param TanHParameter
    threshold_param ThresholdParameter; tile_param TileParameter; window_data_param WindowDataParameter
"""

_V1_PARAMS = """
    accuracy_param AccuracyParameter; argmax_param ArgMaxParameter; concat_param ConcatParameter
    contrastive_loss_param ContrastiveLossParameter; convolution_param ConvolutionParameter
    data_param DataParameter; dropout_param DropoutParameter; dummy_data_param DummyDataParameter
    eltwise_param EltwiseParameter; exp_param ExpParameter; hdf5_data_param HDF5DataParameter
    hdf5_output_param HDF5OutputParameter; hinge_loss_param HingeLossParameter
    image_data_param ImageDataParameter; infogain_loss_param InfogainLossParameter
    inner_product_param InnerProductParameter; lrn_param LRNParameter
    memory_data_param MemoryDataParameter; mvn_param MVNParameter; pooling_param PoolingParameter
    power_param PowerParameter; relu_param ReLUParameter; sigmoid_param SigmoidParameter
    softmax_param SoftmaxParameter; slice_param SliceParameter; tanh_param TanHParameter
    threshold_param ThresholdParameter; window_data_param WindowDataParameter
    transform_param TransformationParameter; loss_param LossParameter
"""

_SPEC: dict[str, str] = {
    "BlobShape": "dim @1 *int",
    "BlobProto": """shape @7 BlobShape; data @5 *float; diff @6 *float; double_data @8 *double
        double_diff @9 *double; num @1 int=0; channels @2 int=0; height @3 int=0; width @4 int=0""",
    "BlobProtoVector": "blobs @1 *BlobProto",
    "FillerParameter": """type string=constant; value float=0; min float=0; max float=1; mean float=0
        std float=1; sparse int=-1; variance_norm VarianceNorm=FAN_IN""",
    "NetParameter": """name @1 string; input @3 *string; input_shape @8 *BlobShape; input_dim @4 *int
        force_backward @5 bool=false; state @6 NetState; debug_info @7 bool=false
        layer @100 *LayerParameter; layers @2 *V1LayerParameter""",
    "NetState": "phase Phase=TEST; level int=0; stage *string",
    "NetStateRule": "phase Phase; min_level int; max_level int; stage *string; not_stage *string",
    "ParamSpec": "name string; share_mode DimCheckMode; lr_mult float=1; decay_mult float=1",
    "LayerParameter": """name @1 string; type @2 string; bottom @3 *string; top @4 *string; phase @10 Phase
        loss_weight @5 *float; param @6 *ParamSpec; blobs @7 *BlobProto; propagate_down @11 *bool
        include @8 *NetStateRule; exclude @9 *NetStateRule
        transform_param @100 TransformationParameter; loss_param @101 LossParameter""" + _LAYER_PARAMS,
    "V1LayerParameter": """bottom @2 *string; top @3 *string; name @4 string; include @32 *NetStateRule
        exclude @33 *NetStateRule; type @5 V1LayerType; blobs @6 *BlobProto; param @1001 *string
        blob_share_mode @1002 *DimCheckMode; blobs_lr @7 *float; weight_decay @8 *float
        loss_weight @35 *float; layer @1 V0LayerParameter""" + _V1_PARAMS,
    "V0LayerParameter": "",
    "TransformationParameter": """scale float=1; mirror bool=false; crop_size uint=0; mean_file string
        mean_value *float; force_color bool=false; force_gray bool=false""",
    "LossParameter": "ignore_label int; normalization NormalizationMode=VALID; normalize bool",
    "AccuracyParameter": "top_k uint=1; axis int=1; ignore_label int",
    "ArgMaxParameter": "out_max_val bool=false; top_k uint=1; axis int",
    "BatchNormParameter": "use_global_stats bool; moving_average_fraction float=0.999; eps float=1e-5",
    "BiasParameter": f"axis int=1; num_axes int=1; filler {_FILLER}",
    "ClipParameter": "min float; max float",
    "ConcatParameter": "axis int=1; concat_dim uint=1",
    "ContrastiveLossParameter": "margin float=1; legacy_version bool=false",
    "ConvolutionParameter": f"""num_output uint; bias_term bool=true; pad *uint; kernel_size *uint
        stride *uint; dilation *uint; pad_h uint=0; pad_w uint=0; kernel_h uint; kernel_w uint
        stride_h uint; stride_w uint; group uint=1; weight_filler {_FILLER}; bias_filler {_FILLER}
        engine Engine=DEFAULT; axis int=1; force_nd_im2col bool=false""",
    "CropParameter": "axis int=2; offset *uint",
    "DataParameter": """source string; batch_size uint; rand_skip uint=0; backend DB=LEVELDB
        scale float=1; mean_file string; crop_size uint=0; mirror bool=false
        force_encoded_color bool=false; prefetch uint=4""",
    "DropoutParameter": "dropout_ratio float=0.5",
    "DummyDataParameter": f"""data_filler *{_FILLER}; shape *BlobShape; num *uint; channels *uint
        height *uint; width *uint""",
    "EltwiseParameter": "operation EltwiseOp=SUM; coeff *float; stable_prod_grad bool=true",
    "ELUParameter": "alpha float=1",
    "EmbedParameter": f"""num_output uint; input_dim uint; bias_term bool=true; weight_filler {_FILLER}
        bias_filler {_FILLER}""",
    "ExpParameter": "base float=-1; scale float=1; shift float=0",
    "FlattenParameter": "axis int=1; end_axis int=-1",
    "HDF5DataParameter": "source string; batch_size uint; shuffle bool=false",
    "HDF5OutputParameter": "file_name string",
    "HingeLossParameter": "norm Norm=L1",
    "ImageDataParameter": """source string; batch_size uint=1; rand_skip uint=0; shuffle bool=false
        new_height uint=0; new_width uint=0; is_color bool=true; scale float=1; mean_file string
        crop_size uint=0; mirror bool=false; root_folder string=""",
    "InfogainLossParameter": "source string; axis int=1",
    "InnerProductParameter": f"""num_output uint; bias_term bool=true; weight_filler {_FILLER}
        bias_filler {_FILLER}; axis int=1; transpose bool=false""",
    "InputParameter": "shape *BlobShape",
    "LogParameter": "base float=-1; scale float=1; shift float=0",
    "LRNParameter": """local_size uint=5; alpha float=1; beta float=0.75
        norm_region NormRegion=ACROSS_CHANNELS; k float=1; engine Engine=DEFAULT""",
    "MemoryDataParameter": "batch_size uint; channels uint; height uint; width uint",
    "MVNParameter": "normalize_variance bool=true; across_channels bool=false; eps float=1e-9",
    "ParameterParameter": "shape BlobShape",
    "PoolingParameter": """pool PoolMethod=MAX; pad uint=0; pad_h uint=0; pad_w uint=0; kernel_size uint
        kernel_h uint; kernel_w uint; stride uint=1; stride_h uint; stride_w uint; engine Engine=DEFAULT
        global_pooling bool=false; round_mode RoundMode=CEIL""",
    "PowerParameter": "power float=1; scale float=1; shift float=0",
    "PReLUParameter": f"filler {_FILLER}; channel_shared bool=false",
    "PythonParameter": "module string; layer string; param_str string=\"\"; share_in_parallel bool=false",
    "RecurrentParameter": f"""num_output uint=0; weight_filler {_FILLER}; bias_filler {_FILLER}
        debug_info bool=false; expose_hidden bool=false""",
    "ReductionParameter": "operation ReductionOp=SUM; axis int=0; coeff float=1",
    "ReLUParameter": "negative_slope float=0; engine Engine=DEFAULT",
    "ReshapeParameter": "shape BlobShape; axis int=0; num_axes int=-1",
    "ScaleParameter": f"""axis int=1; num_axes int=1; filler {_FILLER}; bias_term bool=false
        bias_filler {_FILLER}""",
    "SigmoidParameter": "engine Engine=DEFAULT",
    "SoftmaxParameter": "engine Engine=DEFAULT; axis int=1",
    "SPPParameter": "pyramid_height uint; pool PoolMethod=MAX; engine Engine=DEFAULT",
    "SliceParameter": "axis int=1; slice_point *uint; slice_dim uint=1",
    "SwishParameter": "beta float=1",
    "TanHParameter": "engine Engine=DEFAULT",
    "ThresholdParameter": "threshold float=0",
    "TileParameter": "axis int=1; tiles int",
    "WindowDataParameter": """source string; scale float=1; mean_file string; batch_size uint
        crop_size uint=0; mirror bool=false; fg_threshold float=0.5; bg_threshold float=0.5
        fg_fraction float=0.25; context_pad uint=0; crop_mode string=warp; cache_images bool=false
        root_folder string=\"\"""",
    "SolverParameter": """net string; net_param NetParameter; train_net string; test_net *string
        train_net_param NetParameter; test_net_param *NetParameter; train_state NetState
        test_state *NetState; test_iter *int; test_interval int=0; test_compute_loss bool=false
        test_initialization bool=true; base_lr float; display int=0; average_loss int=1; max_iter int
        iter_size int=1; lr_policy string; gamma float; power float; momentum float; weight_decay float
        regularization_type string=L2; stepsize int; stepvalue *int; clip_gradients float=-1
        snapshot int=0; snapshot_prefix string; snapshot_diff bool=false
        snapshot_format SnapshotFormat=BINARYPROTO; solver_mode SolverMode=GPU; device_id int=0
        random_seed int=-1; type string=SGD; delta float=1e-8; momentum2 float=0.999
        rms_decay float=0.99; debug_info bool=false; snapshot_after_train bool=true
        solver_type SolverType=SGD; layer_wise_reduce bool=true; weights *string""",
}


@dataclass(frozen=True)
class Field:
    name: str
    type: str                 # a scalar type, an enum name (in ENUMS) or a message name (in MESSAGES)
    repeated: bool = False
    number: int | None = None
    default: Any = None

    @property
    def is_message(self) -> bool:
        return self.type in _SPEC

    @property
    def is_enum(self) -> bool:
        return self.type in ENUMS


def _default(type_: str, text: str | None) -> Any:
    if text is None:
        return None
    if type_ in ("float", "double"):
        return float(text)
    if type_ in ("int", "uint"):
        return int(text)
    if type_ == "bool":
        return text == "true"
    if type_ in ("string", "bytes"):
        return text.strip('"')
    return text          # an enum value name


def _parse(spec: str) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for line in spec.replace(";", "\n").splitlines():
        words = line.split()
        if not words:
            continue
        name, rest = words[0], words[1:]
        number = None
        if rest and rest[0].startswith("@"):
            number = int(rest[0][1:])
            rest = rest[1:]
        type_, _, default = rest[0].partition("=")
        repeated = type_.startswith("*")
        type_ = type_.lstrip("*")
        fields[name] = Field(name, type_, repeated, number, _default(type_, default or None))
    return fields


MESSAGES: dict[str, dict[str, Field]] = {name: _parse(spec) for name, spec in _SPEC.items()}

for _m in MESSAGES.values():
    for _f in _m.values():
        assert _f.type in SCALARS or _f.type in ENUMS or _f.type in MESSAGES, _f

#: the ``*_param`` blocks each layer type reads (a block given to another type is ignored by Caffe)
TYPE_PARAMS: dict[str, tuple[str, ...]] = {
    "AbsVal": (), "Accuracy": ("accuracy_param",), "ArgMax": ("argmax_param",),
    "BatchNorm": ("batch_norm_param",), "Bias": ("bias_param",), "BNLL": (), "Clip": ("clip_param",),
    "Concat": ("concat_param",), "ContrastiveLoss": ("contrastive_loss_param", "loss_param"),
    "Convolution": ("convolution_param",), "Crop": ("crop_param",),
    "Data": ("data_param", "transform_param"), "Deconvolution": ("convolution_param",),
    "Dropout": ("dropout_param",), "DummyData": ("dummy_data_param",), "Eltwise": ("eltwise_param",),
    "ELU": ("elu_param",), "Embed": ("embed_param",), "EuclideanLoss": ("loss_param",),
    "Exp": ("exp_param",), "Flatten": ("flatten_param",), "HDF5Data": ("hdf5_data_param",),
    "HDF5Output": ("hdf5_output_param",), "HingeLoss": ("hinge_loss_param", "loss_param"),
    "Im2col": ("convolution_param",), "ImageData": ("image_data_param", "transform_param"),
    "InfogainLoss": ("infogain_loss_param", "loss_param", "softmax_param"),
    "InnerProduct": ("inner_product_param",), "Input": ("input_param",), "Log": ("log_param",),
    "LRN": ("lrn_param",), "LSTM": ("recurrent_param",), "LSTMUnit": (),
    "MemoryData": ("memory_data_param", "transform_param"), "MultinomialLogisticLoss": ("loss_param",),
    "MVN": ("mvn_param",), "Parameter": ("parameter_param",), "Pooling": ("pooling_param",),
    "Power": ("power_param",), "PReLU": ("prelu_param",), "Python": ("python_param",),
    "Reduction": ("reduction_param",), "ReLU": ("relu_param",), "Reshape": ("reshape_param",),
    "RNN": ("recurrent_param",), "Scale": ("scale_param",),
    "Sigmoid": ("sigmoid_param",), "SigmoidCrossEntropyLoss": ("loss_param", "sigmoid_param"),
    "Silence": (), "Slice": ("slice_param",), "Softmax": ("softmax_param",),
    "SoftmaxWithLoss": ("softmax_param", "loss_param"), "SPP": ("spp_param",), "Split": (),
    "Swish": ("swish_param",), "TanH": ("tanh_param",), "Threshold": ("threshold_param",),
    "Tile": ("tile_param",), "WindowData": ("window_data_param", "transform_param"),
    "BatchReindex": (), "Filter": (),
}

#: Caffe layer types netspec does not implement, and why
UNSUPPORTED_TYPES: dict[str, str] = {
    "WindowData": "Caffe keeps it only for archival purposes (R-CNN windows); use ImageData or a "
                  "plugin layer",
    "MemoryData": "netspec feeds arrays through Input layers (Net.set_input) or an in-memory dataset",
    "HDF5Output": "netspec does not write blobs to files from inside a net; read them from "
                  "Net.blobs after forward",
    "Python": "Caffe's Python layers are user code; write a netspec plugin layer with the same "
              "type name and list its file under 'plugins:'",
    "SPP": "spatial pyramid pooling is not implemented in netspec",
    "RNN": "recurrent layers are not implemented in netspec",
    "LSTM": "recurrent layers are not implemented in netspec",
    "LSTMUnit": "recurrent layers are not implemented in netspec",
    "BatchReindex": "BatchReindex is not implemented in netspec",
    "Filter": "Filter is not implemented in netspec",
    "Parameter": "Parameter layers are not implemented in netspec; use named param sharing",
}


def field(message: str, name: str) -> Field | None:
    return MESSAGES[message].get(name)


def enum_name(enum: str, number: int) -> str | None:
    for k, v in ENUMS[enum].items():
        if v == number:
            return k
    return None
