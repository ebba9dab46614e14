"""Wire formats shared with the outside world's simulators: pure functions, importing nothing else of
``oms_ops``, so a simulator can reuse the product's definition (e.g. a webhook signature) without depending
on the OMS."""
