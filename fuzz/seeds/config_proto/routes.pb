
$
gwprodcluster.local"	
appgw 
http127.0.0.1:8080
main 
tcp
[::1]:9000"
db"ä
main‰
apiapi.prod.svc.cluster.local*.example.comwww.*api:8080’
	match-allh
/v1/https?"
GET*api2
:path/2
x-user[a-z]+:	
x-debugB
q
1Hê?R

appweb^
%
api-v1P

x-ab
x-cdx-e

api-v2"


x-v2

/internal/api.internal:80O
regex-rewrite
/r/([^/]+)/(.*))

api-v1
^/r/([^/]+)/(.*)$/\2/$19
moved

/old"&
/new?x=1b.example.com˚A"https(¥=
teapot*¢short and stout2
x-secret:
x-teapotyes
fallback*


api-v1*_
api-v1,
127.0.0.1:9001
versionv1"	
rzs

[::1]:9002"

x-user(*ÄÂöw0B*I
api-v2
127.0.0.2:9001
127.0.0.3:9001"
session/ê00*
db
127.0.0.4:54320