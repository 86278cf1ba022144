# Fails when a source or internal header in DIR includes an internal header
# ("src/<layer>/...") of a layer not in ALLOWED (the layer itself and those
# below it), naming the file, the line and the header.
#   cmake -DDIR=<folder> -DALLOWED=<layer,layer...> -P internal_includes.cmake
cmake_policy(VERSION 3.25)
string(REPLACE "," ";" ALLOWED "${ALLOWED}")
file(GLOB files "${DIR}/*.h" "${DIR}/*.cc")
set(problems "")
foreach(file IN LISTS files)
  file(STRINGS "${file}" lines)
  set(number 0)
  foreach(line IN LISTS lines)
    math(EXPR number "${number} + 1")
    if(line MATCHES "^#include \"src/([a-z_]+)/([^\"]+)\"")
      if(NOT CMAKE_MATCH_1 IN_LIST ALLOWED)
        string(APPEND problems
               "${file}:${number}: includes src/${CMAKE_MATCH_1}/${CMAKE_MATCH_2}, "
               "of the ${CMAKE_MATCH_1} layer, which is not below this one\n")
      endif()
    endif()
  endforeach()
endforeach()
list(LENGTH files count)
if(problems)
  message(FATAL_ERROR "${problems}")
endif()
message(STATUS "${count} files in ${DIR} include no layer above")
