/* The opcode tables: the adapter that runs each opcode and the check that verifies it,
 * indexed by the ids of lowering/opset.py (jt_opcodes.h); they follow the generated
 * JT_FOR_EACH_OP list. Firmware built for one blob defines JT_OPS_USED, a header with one
 * JT_USES_<NAME> 0 or 1 per opcode: only the kernels that blob runs are linked (the flash
 * the others take), and the verifier refuses the rest as unknown opcodes. */
#include "jt_internal.h"

#ifdef JT_OPS_USED
#include JT_OPS_USED
#define JT_PICK(NAME, fn) (JT_USES_##NAME ? (fn) : NULL)
#else
#define JT_PICK(NAME, fn) (fn)
#endif

#define JT_OP_ENTRY(name, NAME) [JT_OP_##NAME] = JT_PICK(NAME, jt_op_##name),
const jt_op_fn jt_op_table[JT_LAST_OPCODE + 1] = {JT_FOR_EACH_OP(JT_OP_ENTRY)};
#undef JT_OP_ENTRY

#define JT_CHECK_ENTRY(name, NAME) [JT_OP_##NAME] = JT_PICK(NAME, jt_check_##name),
const jt_check_fn jt_check_table[JT_LAST_OPCODE + 1] = {JT_FOR_EACH_OP(JT_CHECK_ENTRY)};
#undef JT_CHECK_ENTRY
