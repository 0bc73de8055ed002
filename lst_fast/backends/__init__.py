"""The operators' backends: the compiled extension's loader, the argument contract, the pure-PyTorch
reference, the CUDA compatibility check and the machine's facts (lst_fast.ops is their public face).
The compiled modules themselves stay at lst_fast/_C*.so."""
