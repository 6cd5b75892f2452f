/* The blob, linked into flash as it is (JT_BLOB_FILE: its path, a string). */
  .section .jt_blob, "a"
  .balign 8
  .global jt_blob, jt_blob_end
jt_blob:
  .incbin JT_BLOB_FILE
jt_blob_end:
