"""Training of binarized CNV/LFC networks in PyTorch, exported in the BNN-PYNQ Lasagne layout.

This is the only package that imports torch (architecture.md); importing `bnnctl.train` itself
does not, so the CLI can report a missing PyTorch as a one-line error.

Modules, in data-flow order:
  quant      quantisers with straight-through estimators (spec §2.3)
  layers     quantised conv/dense layers, batch-norm flavours and the post-step constraints
  models     CNV / LFC built from the topology configs (spec §1.2, §1.3)
  data       train / validation / test splits from bnnctl.data, stored for the trainer
  inputs     pixels -> exactly the values the hardware sees, plus augmentation
  recipe     default hyper-parameters per topology (chosen by measurement, see the module)
  export     model -> Lasagne-layout .npz (spec §2.1, §2.2)
  checkpoint atomic checkpoints with every RNG / optimizer / scheduler state
  hwtest     hardware-exact test error through convert/ and infer/
  trainer    the training run that ties it together
"""
