# ctest script: install ringlab into a scratch prefix -> configure one
# example consumer against it with find_package(ringlab) -> build -> run.
#
#   cmake -DRINGLAB_BUILD_DIR=... -DRINGLAB_SOURCE_DIR=... -DSCRATCH=...
#         -DCONSUMER=consumer            # folder under examples/
#         -DHEADER=transport/loop.h      # must exist under include/ringlab/
#         -DPROGRAM=udp_echo_once        # built by the consumer, run with
#         -DARGS=epoll                   # these arguments (a ;-list)
#         [-DRANDOM_DOMAIN=ON]           # append a DDS domain id 1..99
#         -P check_installed_package.cmake
foreach(var RINGLAB_BUILD_DIR RINGLAB_SOURCE_DIR SCRATCH CONSUMER HEADER PROGRAM)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_installed_package.cmake: -D${var}= is required")
  endif()
endforeach()
file(REMOVE_RECURSE ${SCRATCH})
set(prefix ${SCRATCH}/prefix)
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()
run(${CMAKE_COMMAND} --install ${RINGLAB_BUILD_DIR} --prefix ${prefix})
if(NOT EXISTS ${prefix}/include/ringlab/${HEADER})
  message(FATAL_ERROR "installed header ${HEADER} missing under ${prefix}/include/ringlab")
endif()
# The consumer must build with the same sanitizer flags as the library.
get_filename_component(cache ${RINGLAB_BUILD_DIR}/CMakeCache.txt ABSOLUTE)
file(STRINGS ${cache} sanitize REGEX "^RINGLAB_SANITIZE:")
string(REGEX REPLACE "^RINGLAB_SANITIZE:[A-Z]*=" "" sanitize "${sanitize}")
set(flags "")
if(sanitize)
  set(flags "-fsanitize=${sanitize}")
endif()
run(${CMAKE_COMMAND} -S ${RINGLAB_SOURCE_DIR}/examples/${CONSUMER} -B ${SCRATCH}/build
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Debug
    "-DCMAKE_CXX_FLAGS=${flags}" "-DCMAKE_EXE_LINKER_FLAGS=${flags}")
run(${CMAKE_COMMAND} --build ${SCRATCH}/build -j2)
set(args ${ARGS})
if(RANDOM_DOMAIN)
  # Concurrent test runs must not share a DDS domain.
  string(RANDOM LENGTH 2 ALPHABET 123456789 domain)
  list(APPEND args ${domain})
endif()
run(${SCRATCH}/build/${PROGRAM} ${args})
