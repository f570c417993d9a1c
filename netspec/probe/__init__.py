"""Asking a trained net questions about its input: what it wants to see, and how easily it is fooled.

- ``model``: a trained net opened for probing (the derived deploy net with ``force_backward``,
  its weights, its preprocessing and data range, its class scores), and the gradient of any
  blob with respect to the input through the net's own layers' backward;
- ``inputs``: images, dataset records and their preprocessing;
- ``visualize``: filters, feature maps, activation maximization (class, neuron), saliency;
- ``adversarial``: fast gradient sign and iterative attacks, fooling images from noise;
- ``pictures``: the grids they are drawn as (Pillow), written atomically.

``netspec visualize`` and ``netspec adversarial`` are thin commands over these modules.
"""
