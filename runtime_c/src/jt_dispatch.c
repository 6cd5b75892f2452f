/* The opcode tables: the adapter that runs each opcode and the check that verifies it,
 * indexed by the ids of lowering/opset.py (jt_opcodes.h); they follow the generated
 * JT_FOR_EACH_OP list. */
#include "jt_internal.h"

#define JT_OP_ENTRY(name, NAME) [JT_OP_##NAME] = jt_op_##name,
const jt_op_fn jt_op_table[JT_LAST_OPCODE + 1] = {JT_FOR_EACH_OP(JT_OP_ENTRY)};
#undef JT_OP_ENTRY

#define JT_CHECK_ENTRY(name, NAME) [JT_OP_##NAME] = jt_check_##name,
const jt_check_fn jt_check_table[JT_LAST_OPCODE + 1] = {JT_FOR_EACH_OP(JT_CHECK_ENTRY)};
#undef JT_CHECK_ENTRY
