# Tests of the client SDK (lib/client). Included from tests/CMakeLists.txt,
# which has found CMOCKA_LIB and Threads:
#   include(client.cmake)
# Every test here carries the label "client" besides unit/integration, so
# the ThreadSanitizer tree (make check-tsan) can run exactly these.
if(NOT TARGET gray_client)
  return()
endif()

# Unit tests (cmocka): no network; they drive the model and the cache
# through lib/client/internal.h.
foreach(t client client_stress client_oom)
  add_executable(test_${t} ${CMAKE_CURRENT_LIST_DIR}/unit/test_${t}.c)
  target_include_directories(test_${t} PRIVATE ${PROJECT_SOURCE_DIR}/lib)
  target_link_libraries(test_${t} PRIVATE gray_client ${CMOCKA_LIB} Threads::Threads)
endforeach()
add_test(NAME unit/client COMMAND test_client)
set_tests_properties(unit/client PROPERTIES LABELS "unit;client" TIMEOUT 60)
# Fail the Nth allocation of the snapshot/cache write path until it passes.
add_test(NAME unit/client-oom COMMAND test_client_oom)
set_tests_properties(unit/client-oom PROPERTIES LABELS "unit;client" TIMEOUT 120)
# 8 readers against ~1,000 snapshot swaps a second for 2 s.
add_test(NAME unit/client-stress COMMAND test_client_stress)
set_tests_properties(unit/client-stress PROPERTIES LABELS "unit;client" TIMEOUT 120)

# Against a real grayd on 127.0.0.1 (label "integration"): one ctest per
# test function of client_it.c, so they run in parallel.
if(TARGET grayd)
  add_executable(client_it ${CMAKE_CURRENT_LIST_DIR}/integration/client_it.c)
  target_include_directories(client_it PRIVATE ${PROJECT_SOURCE_DIR}/lib)
  target_link_libraries(client_it PRIVATE gray_client)
  # A new test function re-runs cmake (the list is read at configure time).
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/integration/client_it.c)
  file(STRINGS ${CMAKE_CURRENT_LIST_DIR}/integration/client_it.c client_it_defs REGEX "^static void t_[a-z0-9_]+\\(void\\)")
  foreach(line ${client_it_defs})
    string(REGEX REPLACE "^static void (t_[a-z0-9_]+).*" "\\1" name "${line}")
    add_test(NAME integration/client-${name} COMMAND client_it $<TARGET_FILE:grayd> ${name})
    set_tests_properties(integration/client-${name} PROPERTIES LABELS "integration;client" TIMEOUT 120)
  endforeach()
endif()

# What the ThreadSanitizer tree builds before `ctest -L client`.
add_custom_target(client-tests)
add_dependencies(client-tests test_client test_client_stress test_client_oom)
if(TARGET grayd)
  add_dependencies(client-tests client_it grayd)
endif()
