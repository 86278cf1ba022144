# SLUICE_SANITIZE selects one sanitizer family for every target in the build.
# AddressSanitizer and ThreadSanitizer cannot share a process, so anything
# other than exactly one family is refused here rather than at link time.
if(SLUICE_SANITIZE STREQUAL "")
  return()
endif()

string(REPLACE "," ";" _sluice_sanitizers "${SLUICE_SANITIZE}")
list(TRANSFORM _sluice_sanitizers STRIP)
if("thread" IN_LIST _sluice_sanitizers AND
   ("address" IN_LIST _sluice_sanitizers OR "undefined" IN_LIST _sluice_sanitizers))
  message(FATAL_ERROR
      "SLUICE_SANITIZE='${SLUICE_SANITIZE}': ThreadSanitizer cannot be combined with "
      "AddressSanitizer or UndefinedBehaviorSanitizer; build them separately")
endif()

if(SLUICE_SANITIZE STREQUAL "address")
  set(_sluice_flags -fsanitize=address,undefined -fno-sanitize-recover=all)
elseif(SLUICE_SANITIZE STREQUAL "thread")
  set(_sluice_flags -fsanitize=thread)
else()
  message(FATAL_ERROR
      "SLUICE_SANITIZE='${SLUICE_SANITIZE}' is not one of: '' (none), 'address', 'thread'")
endif()

add_compile_options(${_sluice_flags} -fno-omit-frame-pointer -g)
add_link_options(${_sluice_flags})
