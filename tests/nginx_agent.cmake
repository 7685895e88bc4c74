# gray-agent's tests. Included from tests/CMakeLists.txt (which has found
# CMOCKA_LIB) when the gray-agent target exists:
#   - unit/agent-render: the renderer, fed state documents that bypass
#     grayd's and the SDK's checks (label "unit");
#   - nginx/agent-t_*: the agent against Debian's nginx with the gray module,
#     one ctest per test function of nginx/agent_nginx.py (label "nginx").
#     They exit 77 (skipped) while the module (GRAY_NGINX_MODULE, by default
#     what nginx/ builds into build/nginx/) or nginx is missing.
add_executable(test_agent_render ${CMAKE_CURRENT_LIST_DIR}/unit/test_agent_render.c)
target_link_libraries(test_agent_render PRIVATE gray_agent_render ${CMOCKA_LIB})
add_test(NAME unit/agent-render COMMAND test_agent_render)
set_tests_properties(unit/agent-render PROPERTIES LABELS unit TIMEOUT 60)

if(NOT TARGET grayd)
  return()
endif()
find_package(Python3 REQUIRED COMPONENTS Interpreter)
find_program(GRAY_NGINX_BIN nginx PATHS /usr/sbin /usr/local/sbin)
if(NOT GRAY_NGINX_BIN)
  set(GRAY_NGINX_BIN /usr/sbin/nginx)
endif()
set(GRAY_NGINX_MODULE ${CMAKE_BINARY_DIR}/nginx/ngx_http_gray_module.so CACHE FILEPATH
    "the gray module the agent's Nginx tests load")
# A new test function re-runs cmake (the list is read at configure time).
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/nginx/agent_nginx.py)
file(STRINGS ${CMAKE_CURRENT_LIST_DIR}/nginx/agent_nginx.py agent_nginx_defs REGEX "^def t_")
foreach(line ${agent_nginx_defs})
  string(REGEX REPLACE "^def (t_[a-z0-9_]+).*" "\\1" name "${line}")
  add_test(NAME nginx/agent-${name}
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/nginx/agent_nginx.py
                   $<TARGET_FILE:grayd> $<TARGET_FILE:gray-agent> ${GRAY_NGINX_MODULE} ${GRAY_NGINX_BIN} ${name})
  set_tests_properties(nginx/agent-${name} PROPERTIES LABELS nginx TIMEOUT 120 SKIP_RETURN_CODE 77)
  set_tests_properties(nginx/agent-${name} PROPERTIES ENVIRONMENT "${GRAY_NGINX_TEST_ENV}")
endforeach()
