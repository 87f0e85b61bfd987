# ctest script: install ringlab -> configure examples/rudp_consumer against
# it -> build -> run. Same shape as examples/check_installed_package.cmake.
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
if(NOT EXISTS ${prefix}/include/ringlab/udp/loop_endpoint.h)
  message(FATAL_ERROR "rudp headers missing under ${prefix}/include/ringlab/udp")
endif()
# The consumer must build with the same sanitizer flags as the library.
get_filename_component(cache ${RINGLAB_BUILD_DIR}/CMakeCache.txt ABSOLUTE)
file(STRINGS ${cache} sanitize REGEX "^RINGLAB_SANITIZE:")
string(REGEX REPLACE "^RINGLAB_SANITIZE:[A-Z]*=" "" sanitize "${sanitize}")
set(flags "")
if(sanitize)
  set(flags "-fsanitize=${sanitize}")
endif()
run(${CMAKE_COMMAND} -S ${RINGLAB_SOURCE_DIR}/examples/rudp_consumer -B ${SCRATCH}/build
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Debug
    "-DCMAKE_CXX_FLAGS=${flags}" "-DCMAKE_EXE_LINKER_FLAGS=${flags}")
run(${CMAKE_COMMAND} --build ${SCRATCH}/build -j2)
run(${SCRATCH}/build/rudp_hello epoll)
