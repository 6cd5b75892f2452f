/* The Python extension that carries the host build of the runtime: an empty module, so
 * that setuptools builds it with `pip install -e .`; lowering/cruntime.py loads the same
 * file with ctypes and calls the jt_* functions. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef jaxtiny_c = {PyModuleDef_HEAD_INIT, "_jaxtiny_c",
                                       "host build of the jaxtiny C runtime (use via ctypes)",
                                       -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jaxtiny_c(void) { return PyModule_Create(&jaxtiny_c); }
