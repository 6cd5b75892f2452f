# The jaxtiny runtime for a plain Makefile: include this file, then compile
#   each of $(JAXTINY_SRCS)        with $(JAXTINY_CFLAGS) $(JAXTINY_INC)
#   your files using jaxtiny.h     with $(JAXTINY_INC)
# and link with $(JAXTINY_LDLIBS). $(JAXTINY_HDRS): what the runtime's objects depend on.
JAXTINY_ROOT := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
JAXTINY_DIR := $(JAXTINY_ROOT)/jaxtiny
JAXTINY_SRCS := $(sort $(wildcard $(JAXTINY_DIR)/src/*.c))
JAXTINY_OPS_USED := $(JAXTINY_ROOT)/jaxtiny_ops_used.h
JAXTINY_HDRS := $(wildcard $(JAXTINY_DIR)/include/*.h $(JAXTINY_DIR)/src/*.h) $(JAXTINY_OPS_USED)
JAXTINY_INC := -I$(JAXTINY_DIR)/include
# Results are bit for bit the Python reference only without fused multiply-adds or
# fast-math: put these after your own flags. Warnings are not errors here, so that a newer
# compiler's new warning does not stop your build. JT_OPS_USED links only the kernels of
# this blob's opcodes.
JAXTINY_CFLAGS := -std=c99 -Wall -Wextra -Wshadow -Wconversion -pedantic -ffp-contract=off \
  -fno-fast-math -I$(JAXTINY_DIR)/src -DJT_OPS_USED='"$(abspath $(JAXTINY_OPS_USED))"'
JAXTINY_LDLIBS := -lm
