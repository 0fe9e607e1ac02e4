// Run once by the official mongo image when its volume is empty (as root, before the replica set
// starts): the user the services connect as, allowed to read and write their database only.
const name = process.env.IM_MONGO_USER;
const password = process.env.IM_MONGO_PASSWORD;
const database = process.env.IM_MONGO_DB;
if (!name || !password || !database) {
  throw new Error("IM_MONGO_USER, IM_MONGO_PASSWORD and IM_MONGO_DB are required");
}
db.getSiblingDB("admin").createUser({user: name, pwd: password, roles: [{role: "readWrite", db: database}]});
