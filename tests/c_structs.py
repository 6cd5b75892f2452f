"""ctypes mirrors of the runtime's internal structs (jaxtiny.h's jt_runtime, jt_internal.h's
jt_op), for tests that drive an op's adapter and check without a blob. Keep them in the
structs' field order."""

import ctypes

VP = ctypes.c_void_p
U32 = ctypes.c_uint32
I32 = ctypes.c_int32
I32P = ctypes.POINTER(I32)


class Runtime(ctypes.Structure):
  _fields_ = [("blob", VP), ("arena", VP), ("state", VP), ("blob_len", U32), ("arena_len", U32),
              ("state_len", U32), ("tensors", VP), ("train_ops", VP), ("infer_ops", VP),
              ("consts", VP), ("strings", VP), ("operands", VP), ("attrs", VP),
              *((k, U32) for k in ("n_tensors", "n_train_ops", "n_infer_ops", "n_operands",
                                   "n_attrs", "strings_len", "consts_len", "arena_bytes",
                                   "state_bytes", "blob_crc")),
              *((k, I32) for k in ("io_input", "io_label", "io_loss", "io_logits",
                                   "step_tensor")),
              *((k, U32) for k in ("optimizer", "schedule", "steps", "rounding", "seed")),
              *((k, ctypes.c_float) for k in ("lr", "final_lr", "amplitude", "momentum", "b1",
                                              "b2", "eps")),
              ("in_input", VP), ("in_label", I32), ("out_loss", ctypes.c_float),
              ("out_logits", VP), ("error_index", I32), ("error_where", U32), ("ready", U32)]


class OpView(ctypes.Structure):
  _fields_ = [("opcode", U32), ("inp", I32P), ("out", I32P), ("n_in", U32), ("n_out", U32),
              ("attr", I32P), ("n_attr", U32), ("index", I32)]
