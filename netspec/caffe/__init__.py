"""Caffe interoperability: prototxt nets and solvers to netspec YAML, caffemodel weights both ways.

- ``textformat``: the protobuf text format (``.prototxt``) read with located errors;
- ``messages``: the caffe.proto messages those files use (names, types, enums, defaults);
- ``upgrade``: legacy forms brought to today's Caffe (V1 layers, net inputs, deprecated fields);
- ``convert_net`` / ``convert_solver``: the conversions, each with a coverage ``report``;
- ``caffemodel``: the binary wire format, to and from netspec's named params (safetensors);
- ``emit``: the YAML writer that keeps the prototxt's comments.

Nothing here imports numba; ``netspec convert`` is the command line.
"""
