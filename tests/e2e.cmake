# End-to-end: grayd and the example call chain (examples/) on 127.0.0.1,
# label "e2e", one ctest per test function of e2e/lanes_e2e.py so they run
# in parallel. Included from tests/CMakeLists.txt when the example targets
# exist (examples/ is added before tests/).
find_package(Python3 REQUIRED COMPONENTS Interpreter)
# A new test function re-runs cmake (the list is read at configure time).
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/e2e/lanes_e2e.py)
file(STRINGS ${CMAKE_CURRENT_LIST_DIR}/e2e/lanes_e2e.py e2e_defs REGEX "^def t_")
foreach(line ${e2e_defs})
  string(REGEX REPLACE "^def (t_[a-z0-9_]+).*" "\\1" name "${line}")
  add_test(NAME e2e/${name}
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/e2e/lanes_e2e.py
                   $<TARGET_FILE:grayd> $<TARGET_FILE_DIR:example-gateway>
                   ${PROJECT_SOURCE_DIR}/examples/lanes.json ${name})
  set_tests_properties(e2e/${name} PROPERTIES LABELS e2e TIMEOUT 180)
endforeach()

# make demo itself (scripts/demo.sh and demo-stop.sh), with its own state
# file so a developer's running demo is left alone. Not in the sanitizer
# build: its module needs the sanitizer runtimes preloaded into nginx, which
# the demo (a user's command) does not do; the nginx tests cover that build.
if(TARGET gray-agent AND TARGET ngx_http_gray_module AND NOT GRAY_SANITIZE)
  add_test(NAME e2e/demo COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/e2e/demo_test.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(e2e/demo PROPERTIES LABELS e2e TIMEOUT 120 RESOURCE_LOCK demo)
endif()
